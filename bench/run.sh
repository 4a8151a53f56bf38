#!/usr/bin/env bash
# Every throughput goal of the project, measured side by side in one run on the demo's outputs.
#
# Run `dvc repro` (or `bash scripts/demo.sh`) first: the benchmarks read data/shards, data/raw,
# assets and checkpoints/final. Each script prints its measurements and one line per ratio
# with its goal; this script prints those lines again together at the end. Absolute figures depend
# on the machine; the ratios are measured within one run, so they compare like with like.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"

for need in data/shards data/raw assets/vocab.json checkpoints/final; do
  if [ ! -e "$need" ]; then
    echo "bench/run.sh: $need is missing; run the demo pipeline first (bash scripts/demo.sh, or dvc repro)" >&2
    exit 2
  fi
done

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run() {
  echo "== $*"
  "$PY" "$@" 2>&1 | tee -a "$log"
}

run bench/decode_raw.py
run bench/loader.py
run bench/throughput.py
run bench/search.py caption --threads "$(nproc)" --clock wall --repeats 5  # every core, as inference runs
run bench/padding.py
run bench/materialise.py

echo
echo "== summary (goal beside each measured ratio)"
grep -i "goal" "$log"
