#!/usr/bin/env bash
# Federated MNIST in one command: a Flower server and its Keras clients on this machine.
# First use creates .venv and installs requirements.txt; later runs start at once.
# ./run.sh --help lists the flags (rounds, clients, port, dataset, seed, out, ...);
# ./run.sh dashboard serves the web dashboard alone, for finished runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# No cd: relative paths such as --out results stay relative to where you are.
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

for arg in "$@"; do  # --help needs no set-up: the launcher parses flags with the standard library.
    case "$arg" in -h|--help) exec python3 -m fedmnist.launcher "$@" ;; esac
done

source "$root/scripts/venv.sh"
ensure_venv requirements.txt
exec python -m fedmnist.launcher "$@"
