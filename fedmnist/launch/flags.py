"""``./run.sh``'s flags: the run's settings (``ServerSettings``'s own), the dashboard's and the launcher's.

Checked with the standard library only: ``run.sh`` parses them with plain ``python3`` before the
first set-up installs anything, so a mistake costs a second, not a 2 GB install.
"""

from __future__ import annotations

import argparse

from fedmnist.common.cli import Parser
from fedmnist.common.project import PROJECT_ROOT
from fedmnist.dashboard.serve import add_dashboard_arguments
from fedmnist.settings import defaults
from fedmnist.settings.server_settings import RUN, add_setting_arguments, check_setting_arguments


def parse_args(argv: list[str]):
    """Flags of ``./run.sh``, or of ``./run.sh sweep`` when ``argv`` starts with ``sweep``."""
    from fedmnist.sweep import GRIDS

    sweep = bool(argv) and argv[0] == "sweep"
    parser = Parser(
        prog="./run.sh sweep" if sweep else "./run.sh",
        description="Run a federated MNIST experiment: a Flower server and its Keras clients on this machine."
        + (" A sweep runs every setting of a grid with the same processes and compares them." if sweep else ""),
        epilog="Results: OUT/history/history_<rounds>.pkl/.json/.jsonl, OUT/models/global_<rounds>.keras, "
        "OUT/plots/*.png; each process's output in OUT/logs/. Sweeps: OUT/sweep/<grid>/ "
        "(comparison.md, comparison.png, one folder per setting). The live dashboard: http://127.0.0.1:10000/. "
        "Also: ./run.sh sweep --help, ./run.sh dashboard --help, ./run.sh certs --help, ./run.sh keys --help, "
        "./run.sh central --help (the centralized reference); "
        "./run.sh flwr ARGS runs Flower's flwr CLI in the project's .flwr/, ./run.sh flwr-stop ends its local SuperLink.",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="encrypt client-server traffic; makes development certificates in OUT/certs when missing",
    )
    if sweep:
        argv = argv[1:]
        parser.add_argument(
            "--grid",
            choices=sorted(GRIDS),
            default="heterogeneity",
            help="settings to compare: "
            + "; ".join(f"{name}: {grid.about}" for name, grid in GRIDS.items())
            + " (default: %(default)s)",
        )
    else:
        parser.set_defaults(grid=None)  # Only a sweep has a grid (setting it for both hid --grid's default).
    add_setting_arguments(
        parser,
        program=RUN,
        out=(str(PROJECT_ROOT), "folder for history/, plots/, models/ and logs/ (default: the project folder)"),
    )
    _add_launcher_arguments(parser)
    if sweep:  # A grid's own scale (fedavg-paper: 100 clients on the simulation runtime) unless flags say otherwise.
        grid, _ = parser.parse_known_args(argv)
        parser.set_defaults(**GRIDS[grid.grid].defaults)
    args = parser.parse_args(argv)
    _check_combinations(parser, args, sweep)
    return args


def _add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """Who may join the server, and the dashboard's flags."""
    parser.add_argument(
        "--remote-clients",
        action="store_true",
        help=f"the server listens on all interfaces ({defaults.SERVER_HOST}), so clients on other machines may "
        f"join; any client that reaches the port may (default: {defaults.LOCAL_HOST}, this machine's only)",
    )
    parser.add_argument(
        "--no-dashboard",
        action="store_true",
        help="do not start the web dashboard (./run.sh dashboard serves it alone later)",
    )
    add_dashboard_arguments(parser)


def _check_combinations(parser: argparse.ArgumentParser, args: argparse.Namespace, sweep: bool) -> None:
    """Flags that are each fine but cannot go together: one line and status 2, as argparse's own errors."""
    check_setting_arguments(parser, args)
    if args.remote_clients and args.runtime != "classic":
        parser.error(
            "--remote-clients needs --runtime classic (a simulation's clients are virtual; the deployment's "
            "SuperLink lets in only registered SuperNodes)"
        )
    if sweep and args.ws_clients:
        parser.error("a sweep runs its settings in a row and cannot wait for WebSocket clients (--ws-clients)")
    if sweep and args.runtime == "deployment":
        parser.error("a sweep needs --runtime classic or simulation (its server runs every setting in a row)")
    if args.tls and args.runtime != "classic":
        parser.error(
            "--tls needs --runtime classic (the simulation runs in one process; the deployment always "
            "uses TLS and SuperNode authentication)"
        )
    if args.ws_clients:
        _check_websocket_clients(parser, args)


def _check_websocket_clients(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.runtime != "classic":
        parser.error("--ws-clients needs --runtime classic: WebSocket clients join a Flower server's connections")
    if args.ws_clients > args.clients:
        parser.error(f"--ws-clients ({args.ws_clients}) cannot be more than --clients ({args.clients})")
    if args.no_dashboard:
        parser.error("--ws-clients needs the dashboard: WebSocket clients join at its /ws (drop --no-dashboard)")
    if args.model not in defaults.DENSE_MODELS:
        parser.error(
            f"--ws-clients needs a dense model (WebSocket clients train {' or '.join(defaults.DENSE_MODELS)}), "
            f"not {args.model}"
        )
