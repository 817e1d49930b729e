#!/usr/bin/env python3
"""Flower client for federated MNIST: trains a Keras model on its own share of the training rows.

    python client.py --partition-id 0 --num-partitions 3
    python client.py --server 192.168.1.20:8000 --partition-id 1 --num-partitions 3

The client names only its share (like a SuperNode's node config); the server
sends the run's data set, seed, partition scheme, model and local training.
Flags are checked before TensorFlow is imported, so mistakes fail fast.
"""

import time

PROCESS_STARTED = time.perf_counter()

import argparse
import sys

from fedmnist.common.cli import Parser, configure_logging, exit_now, require_environment, run_cli
from fedmnist.common.garbage import pause_collection
from fedmnist.settings import defaults
from fedmnist.settings.arguments import non_negative_int, positive_float, positive_int, server_address
from fedmnist.settings.server_settings import add_data_home_argument


def fault_spec(text: str) -> str:
    from fedmnist.client.faults import DROP, parse_fault  # NumPy: not needed for --help.

    try:
        fault = parse_fault(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if fault.startswith(DROP):  # Flower's classic client ends its process on any exception in fit.
        raise argparse.ArgumentTypeError(f"{DROP}:N is for ClientApps; on the classic pair use crash-at-round:N")
    return fault


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = Parser(prog="client.py", description="Run one Flower client (Keras) for federated MNIST.")
    parser.add_argument(
        "--server",
        type=server_address,
        default=defaults.CLIENT_SERVER_ADDRESS,
        help="server HOST:PORT (default: %(default)s)",
    )
    parser.add_argument(
        "--partition-id",
        type=non_negative_int,
        default=0,
        help="which share of the training rows this client owns, 0..N-1 (default: %(default)s)",
    )
    parser.add_argument(
        "--num-partitions",
        type=positive_int,
        default=defaults.CLIENTS,
        help="how many shares the training rows are cut into: the server's --clients (default: %(default)s)",
    )
    add_data_home_argument(parser)
    parser.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=defaults.CONNECT_TIMEOUT,
        help="seconds to keep retrying an unreachable server (default: %(default)s)",
    )
    parser.add_argument(
        "--reconnect-timeout",
        type=positive_float,
        default=defaults.RECONNECT_TIMEOUT,
        help="seconds to keep retrying a server this client lost (restarting, a network outage) (default: %(default)s)",
    )
    parser.add_argument(
        "--root-cert", default=None, help="connect over TLS, trusting only servers this CA certificate (ca.pem) signed"
    )
    parser.add_argument(
        "--fault",
        type=fault_spec,
        default=None,
        help="misbehave on purpose, for tests and demos: nan, shape, scale, crash-at-round:N, or an in-bound attack "
        "(sign-flip, ipm, lie, label-flip, free-rider, backdoor: docs/robustness.md)",
    )
    parser.add_argument("--verbose", action="store_true", help="also show Flower's INFO messages")
    args = parser.parse_args(argv)
    if args.partition_id >= args.num_partitions:
        parser.error(f"--partition-id must be below --num-partitions ({args.num_partitions}), got {args.partition_id}")
    return args


def main(argv: list[str]) -> None:
    pause_collection()  # Until TensorFlow is imported (fedmnist.common.garbage).
    require_environment("client.py")
    args = parse_args(argv)
    configure_logging(args.verbose)
    from fedmnist.client.classic import make_client, run_client
    from fedmnist.common.tls import load_root_certificate

    def serve() -> None:
        client = make_client(
            partition_id=args.partition_id,
            num_partitions=args.num_partitions,
            data_home=args.data_home,
            process_started=PROCESS_STARTED,
            fault=args.fault,
        )
        root_certificate = load_root_certificate(args.root_cert) if args.root_cert else None
        run_client(client, args.server, args.connect_timeout, root_certificate, args.reconnect_timeout)

    run_cli(serve)
    exit_now(0)  # The server ended the run; skip the slow TensorFlow/gRPC teardown.


if __name__ == "__main__":
    main(sys.argv[1:])
