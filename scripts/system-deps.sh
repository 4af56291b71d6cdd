#!/usr/bin/env bash
# Debian packages the tests drive for real, installed when missing: chromium (the page tests and UI
# screenshots; Playwright cannot download its own browser offline) and PostgreSQL 15 (team mode).
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v initdb >/dev/null || [ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: the tests need ${missing[*]}: install them with sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
