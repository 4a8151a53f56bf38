#!/usr/bin/env bash
# Generalist vs specialists: bring the demo pipeline up to date (a no-op when it is), then train one
# specialist per task at the generalist's per-task compute and write metrics/specialists.{json,md}.
# Arguments go to `python -m stages.specialists` (e.g. --tasks caption,vqa, --force).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/demo.sh
export PATH="$PWD/.venv/bin:$PATH"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
exec .venv/bin/python -m stages.specialists "$@"
