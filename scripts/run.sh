#!/usr/bin/env bash
# Set up, then run the pipeline once: `bash scripts/run.sh [flow options]` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python flows/mnist_flow.py "$@"
