"""The dashboard's WebSockets: ``/ws`` for federated clients, ``/ws/events`` to follow a run, ``/ws/echo``.

Their messages are described on ``/docs`` (``DESCRIPTION`` in ``fedmnist.dashboard.app``) and their
schemas are in ``fedmnist.dashboard.protocol`` and ``fedmnist.dashboard.schemas``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import partial

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool

from fedmnist.dashboard.live import Event, RunFollower, error_event
from fedmnist.dashboard.participants import Participant
from fedmnist.dashboard.protocol import ParticipantError
from fedmnist.dashboard.runs import find_runs
from fedmnist.dashboard.state import dashboard_of
from fedmnist.settings import defaults

# How a closed connection shows when we send or receive: Starlette's disconnect, its
# "Unexpected ASGI message" RuntimeError, or uvicorn's ClientDisconnected (an OSError).
_CLOSED = (WebSocketDisconnect, RuntimeError, OSError)
router = APIRouter()
JOIN_TOKEN_NEEDED = (
    "this run's places need its join token: open the /client?token=... page or use the ws_client.py "
    "command that ./run.sh printed"
)


@router.websocket("/ws")
async def participate(websocket: WebSocket) -> None:
    dashboard = dashboard_of(websocket)
    if not await _accept(websocket, dashboard.origins):
        return
    participant = Participant(dashboard.federation, send=websocket.send_json, close=websocket.close)
    if not dashboard.federation.admits(websocket.query_params.get("token")):
        await participant.send(ParticipantError(error=JOIN_TOKEN_NEEDED))
        await websocket.close(code=1008, reason="join token missing or wrong")
        return
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


@router.websocket("/ws/events")
async def follow(websocket: WebSocket, run: str | None = None) -> None:
    dashboard = dashboard_of(websocket)
    if not await _accept(websocket, dashboard.origins):
        return
    follower = RunFollower(dashboard.base, run if run in find_runs(dashboard.base) else None)
    # The pusher and the replies share the follower and the socket: one at a time.
    lock = asyncio.Lock()

    async def send(events: Callable[[], list[Event]]) -> None:
        async with lock:
            for event in await run_in_threadpool(events):  # File reads stay off the event loop.
                await websocket.send_json(event)

    async def push() -> None:
        try:
            while True:
                await asyncio.sleep(dashboard.poll_seconds)
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


@router.websocket("/ws/echo")
async def echo(websocket: WebSocket) -> None:
    if not await _accept(websocket, dashboard_of(websocket).origins):
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


async def _accept(websocket: WebSocket, origins: list[str]) -> bool:
    """Accept the connection unless a browser opened it from an origin CORS does not allow."""
    origin = websocket.headers.get("origin")
    if "*" not in origins and origin is not None and origin not in origins:
        await websocket.close(code=1008, reason=f"origin {origin} not allowed (--cors-origins)")
        return False
    await websocket.accept()
    return True
