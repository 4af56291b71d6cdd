#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine, check the code, build the docs, then run
# the whole test suite: `bash scripts/test.sh [pytest options]` (e.g. `-m "not slow"` for the fast tier,
# `-m "not needs_postgres and not needs_chromium"` without the Debian services).
set -euo pipefail
cd "$(dirname "$0")/.."
# Bytecode caches on, where the machine's environment turns them off (PYTHONDONTWRITEBYTECODE): pytest
# then keeps the test modules it rewrote, and the commands the tests start read the package compiled.
unset PYTHONDONTWRITEBYTECODE
# The Debian packages install while uv installs the Python ones and the code is checked: apt waits on
# its downloads, the rest on the CPU.
bash scripts/system-deps.sh &
system_deps=$!
bash scripts/setup.sh test
# The Prefect database the tests' servers start on (copies of it; a new one's migrations take a server
# twice as long to start), made on the core that the checks below leave idle.
prefect_home=$(mktemp -d)
trap 'rm -rf "$prefect_home"' EXIT
env -u PREFECT_SERVER_DATABASE_CONNECTION_URL -u PREFECT_API_DATABASE_CONNECTION_URL PREFECT_HOME="$prefect_home" \
  PREFECT_SERVER_ANALYTICS_ENABLED=false .venv/bin/python -m prefect server database upgrade -y \
  >"$prefect_home/upgrade.log" 2>&1 &
prefect_database=$!
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html
wait "$system_deps"
wait "$prefect_database" || { cat "$prefect_home/upgrade.log" >&2; exit 1; }
# A worker per core, one more when the slow tier runs (tests/conftest.py: three on CI's 2 cores), a
# test file at a time each, the longest files first; the 20 slowest tests listed at the end (where the
# run's time went). Options given here come after these and win, e.g. `-n 0`.
.venv/bin/python -m pytest -n auto --dist loadfile --no-loadscope-reorder --durations=20 \
  --prefect-database="$prefect_home/prefect.db" "$@"
