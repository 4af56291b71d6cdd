#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine, check the code, build the docs, then run
# the whole test suite: `bash scripts/test.sh [pytest options]` (e.g. `-m "not slow"` for the fast tier).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/system-deps.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
exec .venv/bin/python -m pytest "$@"
