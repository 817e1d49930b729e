"""What one WebSocket follows, and the events that keep it up to date.

A ``RunFollower`` follows one run by id, or the current run (the one the server
wrote to last), and switches to a newer run when one starts. ``poll`` looks at
the run's files; when they changed, it returns a ``round`` event per newly
finished round, a ``clients`` event when a client connects or leaves, a
``status`` event when the run ends, or a fresh ``snapshot``
when the run was replaced by a new one (same files, new start) or gained files (its plots).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedmnist.dashboard.protocol import BadMessage, decode_json_object
from fedmnist.dashboard.runs import Run, RunGone, RunSnapshot, find_runs, read_run
from fedmnist.dashboard.schemas import (
    ClientsEvent,
    ErrorEvent,
    PongEvent,
    RoundEvent,
    RoundRecord,
    RunDetail,
    RunInfo,
    SnapshotEvent,
    StatusEvent,
)

Event = dict[str, Any]


class RunFollower:
    """The run a WebSocket follows (``run_id``, or None for the current run) and what it was sent."""

    def __init__(self, base: Path, run_id: str | None = None) -> None:
        self.base = base
        self.run_id = run_id
        self._run: Run | None = None
        self._signature: tuple[Any, ...] | None = None
        self._sent: RunSnapshot | None = None

    def snapshot(self) -> Event:
        """The whole followed run, and remember it as sent."""
        self._run = self._resolve()
        self._signature = self._run.signature() if self._run else None
        try:
            self._sent = read_run(self._run) if self._run else None
        except RunGone:
            self._sent = None
        run = RunDetail.from_snapshot(self._sent) if self._sent else None
        return SnapshotEvent(run=run).model_dump(mode="json")

    def poll(self) -> list[Event]:
        """Events for whatever changed since the last call (usually none)."""
        run = self._resolve()
        if run is None or self._run is None or run.id != self._run.id:
            return [self.snapshot()] if run is not None or self._run is not None else []
        signature = run.signature()
        if signature == self._signature:
            return []
        self._signature = signature
        try:
            now = read_run(run)
        except RunGone:
            return [self.snapshot()]
        before, self._sent = self._sent, now
        if (
            before is None
            or now.started != before.started
            or len(now.records) < len(before.records)
            or (before.initial is None and now.initial is not None)
        ):
            return [self.snapshot()]  # A new run in the same files, or its round 0 arrived.
        events = []
        if now.connected_clients != before.connected_clients and now.connected_clients is not None:
            events.append(
                ClientsEvent(
                    run_id=run.id, connected_clients=now.connected_clients, expected=now.config.get("clients")
                ).model_dump(mode="json")
            )
        events += [
            RoundEvent(
                run_id=run.id, status=now.status, rounds_total=now.rounds_total, record=RoundRecord.from_record(record)
            ).model_dump(mode="json")
            for record in now.records[len(before.records) :]
        ]
        if now.status != before.status and now.status in ("finished", "interrupted"):
            events.append(StatusEvent(run=RunInfo.from_snapshot(now)).model_dump(mode="json"))
        if now.files != before.files:  # The plots and the model arrive after the summary.
            events.append(self.snapshot())
        return events

    def handle(self, message: str) -> list[Event]:
        """Answer one client message; see ``describe_protocol`` for what clients may send."""
        try:
            request = decode_json_object(message)
        except BadMessage as error:
            return [error_event(str(error))]
        kind = request["type"]
        if kind == "ping":
            return [PongEvent().model_dump(mode="json")]
        if kind == "snapshot":
            return [self.snapshot()]
        if kind == "subscribe":
            run_id = request.get("run")
            if run_id is not None and (not isinstance(run_id, str) or run_id not in find_runs(self.base)):
                return [error_event(f"unknown run {run_id!r}; GET /api/runs lists them")]
            self.run_id = run_id
            return [self.snapshot()]
        return [error_event(f"unknown message type {kind!r}; use ping, snapshot or subscribe")]

    def _resolve(self) -> Run | None:
        runs = find_runs(self.base)
        if self.run_id is None:
            return next(iter(runs.values()), None)  # Newest first.
        return runs.get(self.run_id)


def error_event(text: str) -> Event:
    return ErrorEvent(error=text).model_dump(mode="json")
