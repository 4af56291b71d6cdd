#!/usr/bin/env bash
# Create .venv (Python 3.11), install into it (with uv) the exact, hash-checked versions of requirements.lock
# (the runtime dependencies and every extra: test, bench), then the project itself, editable: the
# deployments in prefect.yaml run from the checkout.
# Idempotent: while requirements.lock and pyproject.toml are unchanged, a second call returns at once
# (delete .venv/.setup-done to force a reinstall). To refresh the lock, see docs/development.md, "Refreshing the lock".
# Usage: bash scripts/setup.sh [extras]   e.g. `bash scripts/setup.sh test`
set -euo pipefail
cd "$(dirname "$0")/.."

extras=${1:-}
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: Python 3.11 is required (found $("$python" --version 2>&1) at $python); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

# What the installed .venv was made from; when it matches, there is nothing to do.
done_file=.venv/.setup-done
wanted="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1) $PWD"
if [ -x .venv/bin/python ] && [ -f "$done_file" ] && [ "$(cat "$done_file")" = "$wanted" ]; then
  exit 0
fi

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
fi
rm -f "$done_file"
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# uv installs the lock (it also writes it): on these machines it takes about 30 s where pip takes close
# to 3 minutes (parallel downloads and unpacking), the same files, checked against the same hashes.
"${pip[@]}" uv==0.13.9
# --no-config: the lock is complete; pyproject's [tool.uv] constraint is for `uv pip compile` only.
# Bytecode: uv, unlike pip, writes no .pyc files. Where PYTHONDONTWRITEBYTECODE is set (as on these
# machines) Python never writes them either, and every process would compile what it imports, each time
# (`import tensorflow` then takes several times as long), so uv compiles the whole environment.
# Otherwise (scripts/test.sh unsets it) Python writes each module's .pyc at its first import: only what
# is imported, once (bench/ci_results.md has the times). A .venv set up that way and run later with
# PYTHONDONTWRITEBYTECODE set compiles, in each process, what the tests never imported.
compile=()
if [ -n "${PYTHONDONTWRITEBYTECODE:-}" ]; then compile=(--compile-bytecode); fi
.venv/bin/uv pip install --quiet --no-config --python .venv/bin/python --require-hashes "${compile[@]}" \
  --requirement requirements.lock
# The build backend (setuptools) is one of the locked packages: no isolated build env to fetch.
# flows/ and tasks/ are installed as mnist_pipeline.flows/.tasks (package-dir), which setuptools makes
# editable through an import hook, and it then always adds an informational notice, "Editable
# installation. Please be careful with folders in your working directory with the same name as your
# package" (its `strict` mode prints one too, and `compat` cannot map flows/ at all). That notice alone
# is silenced here: every other warning of the build still shows.
PYTHONWARNINGS="ignore:Editable installation." \
  "${pip[@]}" --no-deps --no-build-isolation --editable ".${extras:+[$extras]}"
echo "$wanted" >"$done_file"
