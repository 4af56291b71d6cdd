#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine, check the code, build the docs, then run
# the whole test suite: `bash scripts/test.sh [pytest options]` (e.g. `-m "not slow"` for the fast tier,
# `-m "not needs_postgres and not needs_chromium"` without the Debian services).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/system-deps.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
# Three workers on CI's 2 cores (much of the slow tier waits on servers and processes, so three end
# sooner than two: bench/ci_results.md), a test file at a time each, the
# longest files first (tests/conftest.py). Options given here come after these and win, e.g. `-n 0`.
exec .venv/bin/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder "$@"
