"""Serving the dashboard: its flags, checks and uvicorn server.

``./run.sh dashboard`` (or ``python -m fedmnist.dashboard``) serves it on its own:

    ./run.sh dashboard                       # the project's runs, http://127.0.0.1:10000/
    ./run.sh dashboard --out results --dashboard-port 10001
    python -m fedmnist.dashboard --out results/history

``./run.sh`` starts the same command beside the Flower server, so the page
follows a run live; alone, it browses finished runs (and follows any run that
writes to the same folder meanwhile).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fedmnist.common.cli import Parser, run_cli
from fedmnist.common.errors import UserError
from fedmnist.common.ports import listening
from fedmnist.settings import defaults
from fedmnist.settings.arguments import port_number, positive_float, server_address

if TYPE_CHECKING:
    import uvicorn

    from fedmnist.dashboard.participants import Federation


def add_dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the dashboard listens and who may call it: shared with ``./run.sh``."""
    parser.add_argument(
        "--dashboard-port",
        type=port_number,
        default=defaults.DASHBOARD_PORT,
        help="port of the web dashboard and API (default: %(default)s)",
    )
    parser.add_argument(
        "--dashboard-host",
        default=defaults.DASHBOARD_HOST,
        help="interface the dashboard listens on; 0.0.0.0 shows it to the network (default: %(default)s)",
    )
    parser.add_argument(
        "--cors-origins",
        type=origin_list,
        default=defaults.CORS_ORIGINS,
        help="comma-separated origins (scheme://host:port) whose pages may call the API and "
        "WebSockets, or * for any (default: %(default)s, fine for local use)",
    )


def origin_list(text: str) -> str:
    """``*`` or comma-separated ``scheme://host[:port]`` origins, normalised to ``a,b``."""
    origins = [origin.strip().rstrip("/") for origin in text.split(",") if origin.strip()]
    if origins == ["*"]:
        return "*"
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise argparse.ArgumentTypeError(f"expected * or origins like http://localhost:3000, got {origin!r}")
    if not origins:
        raise argparse.ArgumentTypeError("expected * or at least one origin")
    return ",".join(origins)


def parse_args(
    argv: list[str], out_default: str = ".", prog: str = "python -m fedmnist.dashboard"
) -> argparse.Namespace:
    parser = Parser(prog=prog, description="Serve the fedmnist dashboard and web API for the runs in a folder.")
    parser.add_argument(
        "--out",
        default=out_default,
        help="a run's --out folder (its history/ and sweep/ runs) or a history/ folder (default: %(default)s)",
    )
    add_dashboard_arguments(parser)
    places = parser.add_argument_group("WebSocket clients (WS /ws): ./run.sh --ws-clients sets these")
    places.add_argument(
        "--flower-server",
        type=server_address,
        default=defaults.CLIENT_SERVER_ADDRESS,
        help="the Flower server WebSocket clients join (default: %(default)s)",
    )
    places.add_argument(
        "--ws-partitions",
        type=partition_ids,
        default=(),
        help="comma-separated partition ids WebSocket clients may take, one each (default: none, "
        "so every join is refused)",
    )
    places.add_argument(
        "--flower-root-cert", default=None, help="CA certificate (ca.pem) of a Flower server that uses TLS"
    )
    places.add_argument("--data-home", default=None, help="where the MNIST cache is (default: scikit-learn's)")
    places.add_argument(
        "--ws-answer-timeout",
        type=positive_float,
        default=defaults.ROUND_TIMEOUT,
        help="seconds a WebSocket client has to answer an instruction; later, the round counts "
        "it as failed (default: %(default)s)",
    )
    return parser.parse_args(argv)


def partition_ids(text: str) -> tuple[int, ...]:
    """``1,2`` as (1, 2): distinct non-negative partition ids."""
    try:
        ids = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected partition ids like 1,2, got {text!r}") from None
    if any(value < 0 for value in ids) or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError(f"expected distinct partition ids >= 0, got {text!r}")
    return ids


def federation(args: argparse.Namespace) -> Federation:
    """Where WebSocket participants join, from the flags; an unreadable certificate is a UserError."""
    from fedmnist.common.tls import load_root_certificate
    from fedmnist.dashboard.participants import Federation

    root = load_root_certificate(args.flower_root_cert) if args.flower_root_cert else None
    return Federation(
        flower_server=args.flower_server,
        partitions=args.ws_partitions,
        root_certificate=root,
        data_home=args.data_home,
        answer_timeout=args.ws_answer_timeout,
        join_token=join_token(args.ws_partitions),
    )


def join_token(places: Sequence[int]) -> str | None:
    """The token WebSocket clients must show: the environment's (./run.sh's), else a new one, said once."""
    if not places:
        return None
    token = os.environ.get(defaults.WS_TOKEN_VARIABLE)
    if not token:
        token = secrets.token_urlsafe(16)
        print(f"WebSocket places: join token {token} (open /client?token={token} on this dashboard)", flush=True)
    return token


def serve(out: str, host: str, port: int, cors_origins: str, places: Federation | None = None) -> None:
    """Serve until interrupted; a missing folder or a busy port is a UserError."""
    base = Path(out).expanduser().resolve()
    if not base.is_dir():
        raise UserError(f"no such folder: {base}")
    if listening(port, host):
        raise UserError(f"port {port} is already in use (another dashboard? choose --dashboard-port)")
    if hasattr(os, "nice"):  # Training shares this machine: the dashboard yields the CPU to it.
        os.nice(defaults.DASHBOARD_NICENESS)
    from fedmnist.dashboard.app import create_app

    app = create_app(base, cors_origins=cors_origins.split(","), federation=places)
    server = uvicorn_server(app, host, port, on_exit=app.state.dashboard.keras_files.close)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    print(f"dashboard: http://{shown}:{port}/ (API docs /docs) for the runs in {base}", flush=True)
    server.run()


def uvicorn_server(
    app: Any, host: str, port: int, on_exit: Callable[[], None] = lambda: None
) -> uvicorn.Server:  # Any ASGI application.
    """The uvicorn server for ``app``: quiet, bounded, and on websockets' current (sans-I/O) protocol.

    A WebSocket message may be at most as large as a participant's answer for
    the largest dense model (``2nn``: 199,210 weights, 5.2 MB); each endpoint
    caps its own messages lower (``/ws/events``: ``WS_MAX_BYTES``; ``/ws``: the
    run's model). A request's headers may be at most ``MAX_HEADER_BYTES``:
    uvicorn's defaults (16 MiB messages; no header limit with httptools) let one
    client make the dashboard hold hundreds of MB. ``on_exit`` cleans up after
    the app when a stop signal ends the server at once (``PromptServer``).
    """
    import uvicorn

    from fedmnist.dashboard.protocol import message_cap

    largest_dense = max(defaults.dense_weight_count(model) for model in defaults.DENSE_MODELS)
    # uvicorn's default "websockets" protocol uses that library's deprecated legacy API; h11 caps headers.
    server_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        ws="websockets-sansio",
        ws_max_size=message_cap(largest_dense),
        http="h11",
        h11_max_incomplete_event_size=defaults.MAX_HEADER_BYTES,
    )
    return _prompt_server_class()(server_config, on_exit)


def _prompt_server_class() -> Callable[[uvicorn.Config, Callable[[], None]], uvicorn.Server]:
    """``PromptServer``, defined once uvicorn is imported (not for ``--help``)."""
    import uvicorn

    class PromptServer(uvicorn.Server):
        """uvicorn's server, which a stop signal ends at once while no connection is open.

        uvicorn notices a stop signal at its next 0.1 s tick, then waits 0.1 s for
        the connections to close: ./run.sh waited about 0.2 s at the end of every
        run for a dashboard nobody had open. With a page open, it stops as uvicorn
        does: the page's connections are closed first.
        """

        def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
            super().__init__(config)
            self.on_exit = on_exit

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.started and not self.server_state.connections:
                self.on_exit()
                signal.signal(sig, signal.SIG_DFL)
                os.kill(os.getpid(), sig)  # Ends as uvicorn's own stop ends: by the signal (e.g. -15).
            super().handle_exit(sig, frame)

    return PromptServer


def main(argv: list[str] | None = None, out_default: str = ".", prog: str = "python -m fedmnist.dashboard") -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv, out_default, prog)
    run_cli(lambda: serve(args.out, args.dashboard_host, args.dashboard_port, args.cors_origins, federation(args)))
