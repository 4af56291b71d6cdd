#!/usr/bin/env bash
# Set up with the test tools, then run the whole test suite: `bash scripts/test.sh [pytest options]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
