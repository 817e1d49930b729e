#!/usr/bin/env bash
# Federated MNIST in one command: a Flower server and its Keras clients on this machine.
# First use creates .venv and installs requirements.txt; later runs start at once.
# ./run.sh --help lists the flags (rounds, clients, port, dataset, seed, out, ...);
# ./run.sh dashboard serves the web dashboard alone, for finished runs;
# ./run.sh setup only sets up .venv (for a machine that runs clients);
# ./run.sh flwr run . ... is Flower's flwr in the project's .flwr/, ./run.sh flwr-stop ends its SuperLink;
# ./run.sh docs serves the documentation (docs/, MkDocs Material) on http://127.0.0.1:8001/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# No cd: relative paths such as --out results stay relative to where you are.
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

if [ "${1:-}" != flwr ] && [ "${1:-}" != docs ]; then  # flwr's and mkdocs' own --help, from .venv.
    for arg in "$@"; do  # --help needs no set-up: the launcher parses flags with the standard library.
        case "$arg" in -h|--help) exec python3 -m fedmnist.launch.launcher "$@" ;; esac
    done
fi

if [ "${1:-}" = setup ]; then  # A client-only machine: the run's packages, nothing else, no run.
    source "$root/scripts/venv.sh"
    ensure_venv requirements.txt
    echo "ready: .venv/bin/python client.py --server HOST:PORT --partition-id I --num-partitions N"
    exit 0
fi

if [ "${1:-}" = docs ]; then  # MkDocs is a development tool: requirements-dev.txt has it.
    shift
    source "$root/scripts/venv.sh"
    ensure_venv requirements-dev.txt
    export NO_MKDOCS_2_WARNING=1  # Material's notice about MkDocs 2, printed on every start.
    exec python -m mkdocs serve --config-file "$root/mkdocs.yml" --dev-addr "${FEDMNIST_DOCS_ADDRESS:-127.0.0.1:8001}" "$@"
fi

# Flag mistakes are found before the first set-up installs 2 GB: the launcher checks them with the
# standard library. Status 2 is a flag error (already explained); anything else, e.g. no python3, is
# left to the set-up below to report.
status=0
FEDMNIST_CHECK_ONLY=1 python3 -m fedmnist.launch.launcher "$@" || status=$?
[ "$status" -eq 2 ] && exit 2

source "$root/scripts/venv.sh"
ensure_venv requirements.txt
exec python -m fedmnist.launch.launcher "$@"
