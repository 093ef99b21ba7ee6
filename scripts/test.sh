#!/usr/bin/env bash
# Every check, from a fresh machine: Python packages into .venv, Debian's Chromium for the browser
# tests, ruff (lint and import order), then pytest. Extra arguments go to pytest.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium for the browser test ..."
  SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo "sudo")
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
source "$(dirname "$0")/setup.sh" requirements-dev.txt
ruff check --quiet . || { echo "ruff found the problems above ('ruff check --fix .' mends import order)" >&2; exit 1; }
python -m pytest "$@"
