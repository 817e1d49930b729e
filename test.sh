#!/usr/bin/env bash
# Runs the whole test suite; first use creates .venv with requirements-dev.txt and installs,
# where missing, Debian's Chromium (the dashboard's browser test) and Fashion-MNIST (offline data).
# ./test.sh --fast: the unit tests, lint and one whole run (about a minute), for the edit-test loop.
# Extra arguments go to pytest, e.g. ./test.sh -k data -x
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
source scripts/debian.sh
ensure_venv requirements-dev.txt
ensure_debian_package /usr/bin/chromium "Chromium for the dashboard's browser test" chromium chromium-driver
ensure_debian_package /usr/share/datasets/fashion-mnist "Fashion-MNIST's IDX files" dataset-fashion-mnist
# Three xdist workers on this 2-core machine: many tests wait (Ray starting, a round timeout, a poll), and a
# third worker fills those gaps (551-578 s against 604-628 s with two). pytest.ini: --dist loadgroup.
# A later -n N, or -n 0 (one process, e.g. for --pdb), overrides it.
arguments=(-n 3)
for argument in "$@"; do
    if [ "$argument" = --fast ]; then arguments+=(-m "not slow or smoke"); else arguments+=("$argument"); fi
done
exec python -m pytest ${arguments[@]+"${arguments[@]}"}
