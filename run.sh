#!/usr/bin/env bash
# Federated MNIST in one command: a Flower server and its Keras clients on this machine.
# First use creates .venv and installs requirements.txt; later runs start at once.
# ./run.sh --help lists the flags (rounds, clients, port, dataset, seed, out, ...).
set -euo pipefail
cd "$(dirname "$0")"

for arg in "$@"; do  # --help needs no set-up: the launcher parses flags with the standard library.
    case "$arg" in -h|--help) exec python3 -m fedmnist.launcher --help ;; esac
done

source scripts/venv.sh
ensure_venv requirements.txt
exec python -m fedmnist.launcher "$@"
