#!/usr/bin/env python3
"""Flower server for federated MNIST: FedAvg over Keras clients, then history and plots.

    python server.py                      # 40 rounds, 3 clients, port 8000
    python server.py --rounds 5 --clients 2 --port 8081 --out /tmp/run

Flags are checked before TensorFlow is imported, so mistakes fail fast.
"""

import time

PROCESS_STARTED = time.perf_counter()

import argparse
import sys

from fedmnist.common.cli import (
    Parser,
    configure_logging,
    exit_now,
    require_environment,
    run_cli,
    take_back_stop_signals,
)
from fedmnist.common.garbage import pause_collection
from fedmnist.settings.server_settings import SERVER, ServerSettings, add_setting_arguments, check_setting_arguments
from fedmnist.sweep import GRIDS


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = Parser(prog="server.py", description="Run the Flower server (FedAvg) for federated MNIST.")
    add_setting_arguments(
        parser, program=SERVER
    )  # One flag per ServerSettings field (fedmnist.settings.server_settings).
    parser.add_argument(
        "--sweep",
        choices=sorted(GRIDS),
        default=None,
        help="run every setting of this grid in a row, for the same clients (see docs/experiments.md)",
    )
    parser.add_argument("--verbose", action="store_true", help="also show Flower's INFO messages")
    args = parser.parse_args(argv)
    check_setting_arguments(parser, args)
    if args.runtime == "deployment":
        parser.error(
            "--runtime deployment runs the ServerApp under a SuperLink: use ./run.sh --runtime deployment "
            "or flwr run (docs/runtimes.md)"
        )
    if args.tls_dir and args.runtime == "simulation":
        parser.error("--tls-dir needs --runtime classic: a simulation has no connections to protect")
    return args


def main(argv: list[str]) -> None:
    pause_collection()  # Until TensorFlow is imported and the model built (fedmnist.common.garbage).
    require_environment("server.py")
    take_back_stop_signals()  # Ctrl-C and SIGTERM: save the completed rounds, then leave.
    args = parse_args(argv)
    configure_logging(args.verbose)
    from fedmnist.results.run_lock import lock_results
    from fedmnist.runtimes.local import federation_for
    from fedmnist.server.run import run_server

    settings = ServerSettings(**{key: value for key, value in vars(args).items() if key not in ("verbose", "sweep")})

    def serve() -> None:
        lock_results(settings.out)  # Held until this process ends: one run per results folder.
        if args.sweep:
            from fedmnist.sweep import run_sweep

            run_sweep(settings, args.sweep, PROCESS_STARTED)
        else:
            run_server(settings, PROCESS_STARTED, federation_for(settings))

    run_cli(serve, interrupted=None)  # The stop's own warning said what was saved and how to go on.
    exit_now(0)  # Results are saved; skip the slow TensorFlow/gRPC teardown.


if __name__ == "__main__":
    main(sys.argv[1:])
