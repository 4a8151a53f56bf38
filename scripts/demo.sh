#!/usr/bin/env bash
# Set up the venv (idempotent) and run the whole demo pipeline on the committed params.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# dvc.yaml runs `python -m stages...`: that python must be the venv's.
export PATH="$PWD/.venv/bin:$PATH"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
exec .venv/bin/dvc repro "$@"
