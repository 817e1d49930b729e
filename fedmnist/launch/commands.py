"""The command lines ``./run.sh`` starts: ``server.py`` with the run's settings, ``client.py`` per share, the dashboard.

Derived from the parsed flags (``fedmnist.launch.flags``), so what reaches each process can be
checked without starting one (``tests/test_flower_app.py`` parses the server's command again).
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from fedmnist.settings import defaults
from fedmnist.settings.server_settings import ServerSettings


def local_clients(args: argparse.Namespace) -> int:
    """How many client.py processes this run starts: the rest of --clients join over WebSocket.

    None (0) in a simulation: its clients are virtual, played by the server's Ray workers;
    the Deployment Runtime starts SuperNodes instead.
    """
    if args.runtime != "classic":
        return 0
    return int(args.clients - args.ws_clients)


def server_command(args: argparse.Namespace, out: Path, certs: Path) -> list[str]:
    """``server.py`` with this run's settings: every ServerSettings field that ./run.sh has a flag for.

    Derived from the settings' fields, so a new setting reaches the server
    without an edit here (the run config of ``flwr run`` is derived the same way).
    """
    values = {**vars(args), "out": str(out), "tls_dir": str(certs) if args.tls else None, "sweep": args.grid}
    values["host"] = defaults.SERVER_HOST if args.remote_clients else defaults.LOCAL_HOST  # Its clients are local.
    command = ["server.py"]
    for name in [field.name for field in fields(ServerSettings)] + ["sweep"]:
        value = values.get(name)  # client_timeout, keep_clients: server.py's own (absent here).
        if value is not None and value is not False:
            command += [f"--{name.replace('_', '-')}", *([] if value is True else [str(value)])]
    return command


def client_command(args: argparse.Namespace, certs: Path, partition_id: int) -> list[str]:
    """``client.py`` for one share: the server sends it everything else (data source, seed, scheme, model)."""
    return [
        "client.py",
        "--server",
        f"127.0.0.1:{args.port}",
        "--partition-id",
        str(partition_id),
        "--num-partitions",
        str(args.clients),
        *data_home_flags(args),
        *(["--root-cert", str(certs / "ca.pem")] if args.tls else []),
    ]


def participant_flags(args: argparse.Namespace, certs: Path) -> list[str]:
    """The dashboard's flags for hosting this run's WebSocket clients on the last partition ids."""
    if not args.ws_clients:
        return []
    places = ",".join(str(p) for p in range(local_clients(args), args.clients))
    return [
        "--flower-server",
        f"127.0.0.1:{args.port}",
        "--ws-partitions",
        places,
        "--ws-answer-timeout",
        str(args.round_timeout),
        *data_home_flags(args),
        *(["--flower-root-cert", str(certs / "ca.pem")] if args.tls else []),
    ]


def dashboard_command(args: argparse.Namespace, out: Path, certs: Path) -> list[str]:
    """``python -m fedmnist.dashboard`` on this run's folder, hosting its WebSocket clients if it has any."""
    return [
        "-m",
        "fedmnist.dashboard",
        "--out",
        str(out),
        "--dashboard-port",
        str(args.dashboard_port),
        "--dashboard-host",
        args.dashboard_host,
        "--cors-origins",
        args.cors_origins,
        *participant_flags(args, certs),
    ]


def dashboard_url(args: argparse.Namespace) -> str:
    """Where a browser on this machine finds the dashboard (127.0.0.1 when it listens on every interface)."""
    host = args.dashboard_host
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{args.dashboard_port}/"


def data_home_flags(args: argparse.Namespace) -> list[str]:
    """``--data-home DIR`` when the run has one: every process reads the same cache."""
    return ["--data-home", args.data_home] if args.data_home else []
