#!/usr/bin/env bash
# Debian packages the tests drive for real, installed when missing: chromium (the page tests and UI
# screenshots; Playwright cannot download its own browser offline) and PostgreSQL 15 (team mode).
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
# initdb where devstack/team/postgres.py looks for it: on PATH, else in Debian's /usr/lib/postgresql/<major>/bin
has_initdb() {
  command -v initdb >/dev/null && return 0
  for found in /usr/lib/postgresql/*/bin/initdb; do [ -x "$found" ] && return 0; done
  return 1
}
has_initdb || missing+=(postgresql-15)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: the tests need ${missing[*]}: install them with sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
