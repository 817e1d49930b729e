#!/usr/bin/env bash
# Runs the whole test suite; first use creates .venv with requirements-dev.txt
# and installs Debian's Chromium (for the dashboard's browser test) where missing.
# Extra arguments go to pytest, e.g. ./test.sh -k data -x
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
source scripts/chromium.sh
ensure_venv requirements-dev.txt
ensure_chromium
exec python -m pytest "$@"
