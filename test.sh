#!/usr/bin/env bash
# Runs the whole test suite; first use creates .venv with requirements-dev.txt.
# Extra arguments go to pytest, e.g. ./test.sh -k data -x
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
ensure_venv requirements-dev.txt
exec python -m pytest "$@"
