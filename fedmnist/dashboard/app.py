"""The dashboard's FastAPI app: the pages, the JSON API and the WebSockets (run events, participants).

``create_app(base)`` serves the runs under ``base`` (an ``--out`` folder or a
``history`` folder). Every request reads the run files afresh, so the app holds
no state about runs beyond what each WebSocket was last sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Query, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic.json_schema import models_json_schema

from fedmnist.dashboard.live import Event, RunFollower, error_event
from fedmnist.dashboard.participants import Federation, Participant
from fedmnist.dashboard.protocol import MESSAGE_MODELS, ParticipantError
from fedmnist.dashboard.runs import Run, RunGone, find_runs, read_run
from fedmnist.dashboard.schemas import ErrorResponse, ModelWeights, RunDetail, RunInfo
from fedmnist.dashboard.weights import KerasFiles, NoWeights, latest_weights
from fedmnist.settings import defaults

STATIC = Path(__file__).parent / "static"
log = logging.getLogger(__name__)
# How a closed connection shows when we send or receive: Starlette's disconnect, its
# "Unexpected ASGI message" RuntimeError, or uvicorn's ClientDisconnected (an OSError).
_CLOSED = (WebSocketDisconnect, RuntimeError, OSError)
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such run, or no weights yet"}
}

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
    federation = federation or Federation()
    keras_files = KerasFiles()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        keras_files.close()

    # FastAPIOffline serves /docs and /redoc with their JavaScript from its package, not a CDN.
    app = FastAPIOffline(title="fedmnist dashboard", description=DESCRIPTION, version="1", lifespan=lifespan)
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET"], allow_headers=["*"])
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def find(run_id: str | None) -> Run:
        runs = find_runs(base)
        if run_id is None:
            if not runs:
                raise HTTPException(404, f"no runs under {base} yet")
            return next(iter(runs.values()))
        if run_id not in runs:
            raise HTTPException(404, f"unknown run {run_id!r}; GET /api/runs lists them")
        return runs[run_id]

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/client", include_in_schema=False)
    def client_page() -> FileResponse:
        """A federated client in the browser (TensorFlow.js), joining over /ws."""
        return FileResponse(STATIC / "client.html")

    @app.get(
        "/api/runs", response_model=list[RunInfo], tags=["runs"], summary="Every run, the most recently updated first"
    )
    def list_runs() -> list[RunInfo]:
        infos = []
        for run in find_runs(base).values():
            try:
                infos.append(RunInfo.from_snapshot(read_run(run)))
            except RunGone:  # Deleted while we listed.
                continue
        return infos

    @app.get(
        "/api/runs/{run_id:path}",
        response_model=RunDetail,
        responses=NOT_FOUND,
        tags=["runs"],
        summary="One run: its config and every finished round",
    )
    def get_run(run_id: str) -> RunDetail:
        try:
            return RunDetail.from_snapshot(read_run(find(run_id)))
        except RunGone:
            raise HTTPException(404, f"run {run_id!r} has no files any more") from None

    @app.get(
        "/api/file",
        tags=["runs"],
        summary="One of a run's pictures or result files (RunDetail.files)",
        responses={
            **NOT_FOUND,
            200: {
                "content": {"image/png": {}, "application/json": {}, "application/octet-stream": {}},
                "description": "The file as the server wrote it",
            },
        },
    )
    def run_file(
        run: str = Query(description="Run id"),
        name: str = Query(description="A name from RunDetail.files, e.g. plots/accuracy.png"),
    ):
        files = find(run).files()  # Only the run's own files, inside the dashboard's folder.
        if name not in files:
            raise HTTPException(404, f"run {run!r} has no file {name!r}; RunDetail.files lists them")
        path = files[name]
        media = {".png": "image/png", ".json": "application/json", ".jsonl": "application/json"}.get(path.suffix)
        return FileResponse(
            path, media_type=media or "application/octet-stream", filename=None if media == "image/png" else path.name
        )

    @app.get(
        "/api/model/latest",
        response_model=ModelWeights,
        tags=["model"],
        summary="The latest global weights of a run",
        responses={
            **NOT_FOUND,
            200: {
                "content": {"application/octet-stream": {}},
                "description": "ModelWeights as JSON, or the .keras file with format=keras",
            },
        },
    )
    async def model_latest(
        run: str | None = Query(None, description="Run id; default: the current run"),
        format: Literal["json", "keras"] = Query(
            "json", description="json: arrays with shape and dtype; keras: a .keras file"
        ),
    ):
        found = find(run)
        try:
            if format == "json":
                weights = await run_in_threadpool(latest_weights, found)
                return weights.document(found.id)
            path, round_number = await run_in_threadpool(keras_files.path, found)
        except NoWeights as error:
            raise HTTPException(404, str(error)) from None
        return FileResponse(
            path,
            media_type="application/octet-stream",
            filename=f"{found.id.replace('/', '-')}-round{round_number}.keras",
        )

    @app.websocket("/ws")
    async def participate(websocket: WebSocket) -> None:
        if not await _accept(websocket, origins):
            return
        participant = Participant(federation, send=websocket.send_json, close=websocket.close)
        try:
            async for text in _texts(websocket, lambda: participant.message_cap):
                if text is None:
                    await participant.send(ParticipantError(error="send JSON text, not bytes"))
                else:
                    await participant.handle(text)
        except _CLOSED:  # The tab closed mid-send.
            return
        finally:
            await participant.leave()

    @app.websocket("/ws/events")
    async def follow(websocket: WebSocket, run: str | None = None) -> None:
        if not await _accept(websocket, origins):
            return
        follower = RunFollower(base, run if run in find_runs(base) else None)
        # The pusher and the replies share the follower and the socket: one at a time.
        lock = asyncio.Lock()

        async def send(events: Callable[[], list[Event]]) -> None:
            async with lock:
                for event in await run_in_threadpool(events):  # File reads stay off the event loop.
                    await websocket.send_json(event)

        async def push() -> None:
            try:
                while True:
                    await asyncio.sleep(poll_seconds)
                    await send(follower.poll)
            except _CLOSED:  # Closed while sending: the receiver ends too.
                return

        pusher: asyncio.Task[None] | None = None
        try:
            if run is not None and follower.run_id is None:
                await send(lambda: [error_event(f"unknown run {run!r}; following the current run")])
            await send(lambda: [follower.snapshot()])
            pusher = asyncio.create_task(push())
            async for text in _texts(websocket, lambda: defaults.WS_MAX_BYTES):
                if text is None:
                    await send(lambda: [error_event("send JSON text, not bytes")])
                else:
                    await send(partial(follower.handle, text))
        except _CLOSED:  # The browser went away mid-send: nothing to answer, nothing to log.
            return
        finally:
            if pusher is not None:
                pusher.cancel()

    @app.websocket("/ws/echo")
    async def echo(websocket: WebSocket) -> None:
        if not await _accept(websocket, origins):
            return
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await websocket.send_text(message["text"])
                else:
                    await websocket.send_bytes(message.get("bytes") or b"")
        except _CLOSED:
            return

    _add_message_schemas(app)
    return app


async def _texts(websocket: WebSocket, cap: Callable[[], int]) -> AsyncIterator[str | None]:
    """The socket's messages until it closes: text, or None for bytes. One over ``cap()`` closes it (1009)."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None and len(text) > cap():
            await websocket.close(code=1009, reason=f"message over {cap()} characters")
            return
        yield text


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


async def _accept(websocket: WebSocket, origins: list[str]) -> bool:
    """Accept the connection unless a browser opened it from an origin CORS does not allow."""
    origin = websocket.headers.get("origin")
    if "*" not in origins and origin is not None and origin not in origins:
        await websocket.close(code=1008, reason=f"origin {origin} not allowed (--cors-origins)")
        return False
    await websocket.accept()
    return True
