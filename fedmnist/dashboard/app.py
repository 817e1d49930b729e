"""The dashboard's FastAPI app: the pages and JSON API (``api``) and the WebSockets (``sockets``).

``create_app(base)`` serves the runs under ``base`` (an ``--out`` folder or a
``history`` folder). Every request reads the run files afresh, so the app holds
no state about runs beyond what each WebSocket was last sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic.json_schema import models_json_schema

from fedmnist.dashboard import api, sockets
from fedmnist.dashboard.api import STATIC
from fedmnist.dashboard.participants import Federation
from fedmnist.dashboard.protocol import MESSAGE_MODELS
from fedmnist.dashboard.state import Dashboard
from fedmnist.settings import defaults

DESCRIPTION = """
Watch and query fedmnist runs. The dashboard reads the files the Flower server
writes (`history/history_N.jsonl` while a run goes, `history_N.json` when it
ends, the per-round checkpoint); it takes no part in training.

**WebSockets** (not listed below, as OpenAPI has no WebSocket operations;
their message schemas are under *Schemas* at the bottom of this page):

* `WS /ws` is where **federated clients** join over JSON (the page `/client`
  with TensorFlow.js, `examples/ws_client.py` with NumPy, or any program). A
  participant sends `{"type": "join"}` and gets `welcome` (its partition), then
  `data` (its rows: base64 uint8 pixels and labels), then per round `fit`
  (weights as `Tensor`s and the round's config), answered by `fit_result`
  (weights, `num_examples`, `metrics`), and `evaluate`, answered by
  `evaluate_result` (`loss`, `num_examples`, `metrics`); `end` when the run is
  over. Each participant is a Flower client of the server: FedAvg, update
  validation and the History count it like `client.py`. A malformed message gets
  `{"type": "error", "error": "..."}` and the connection stays open; messages
  over the model's size (26 bytes per weight plus 64 KB) close it (1009).
  Closing the socket leaves the federation: a round in progress counts one failure.
* `WS /ws/events?run=ID` follows a run (without `run`: the current one, switching to
  newer runs as they start). On connect it sends `{"type": "snapshot", "run":
  RunDetail | null}`, then `{"type": "round", "run_id", "status",
  "rounds_total", "record": RoundRecord}` per finished round, `{"type":
  "clients", "run_id", "connected_clients", "expected"}` when a client connects or
  leaves, `{"type": "status", "run": RunInfo}` when the run ends, and a new
  snapshot when the run's files (its plots) arrive. A client may send
  `{"type": "ping"}` (answer: `pong`), `{"type": "snapshot"}` or
  `{"type": "subscribe", "run": ID | null}`; anything else is answered with
  `{"type": "error", "error": "..."}` and the connection stays open. Messages
  over 256 KB close it (1009).
* `WS /ws/echo` sends back every message it receives, text or bytes.
"""


def create_app(
    base: Path,
    *,
    cors_origins: list[str] | None = None,
    federation: Federation | None = None,
    poll_seconds: float = defaults.DASHBOARD_POLL_SECONDS,
) -> FastAPI:
    """The dashboard for the runs under ``base``; ``cors_origins`` defaults to any origin.

    ``federation`` is where ``/ws`` participants join; without it, a local
    Flower server with no places for them (every join is refused).
    """
    origins = cors_origins or ["*"]
    dashboard = Dashboard(base, origins, federation or Federation(), poll_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        dashboard.keras_files.close()

    # FastAPIOffline serves /docs and /redoc with their JavaScript from its package, not a CDN.
    app = FastAPIOffline(title="fedmnist dashboard", description=DESCRIPTION, version="1", lifespan=lifespan)
    app.state.dashboard = dashboard
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET"], allow_headers=["*"])
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(api.router)
    app.include_router(sockets.router)
    _add_message_schemas(app)
    return app


def _add_message_schemas(app: FastAPI) -> None:
    """List the WebSocket messages under /docs's Schemas, as OpenAPI has no WebSocket operations."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            _, definitions = models_json_schema(
                [(model, "validation") for model in MESSAGE_MODELS], ref_template="#/components/schemas/{model}"
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions["$defs"])
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
