"""The live log ``history/history_N.jsonl``: what a run appends while it goes, and what readers make of it.

This module is its only writer (``LiveLogWriter``, used by the server) and its
only parser (``read_live_log``, used by the History, the dashboard, the
launcher and the archive). One JSON object per line, of four kinds:

- a header (``fedmnist.results.records.Header``): the run's settings, data source, name and start; a
  resumed run appends one of its own, after its first;
- ``{"initial": {...}}``: the starting model on the held-out set (round 0);
- ``{"connected_clients": N, "time": ...}``: a client connected or left;
- a round record ``{"round": N, ...}`` (``fedmnist.results.records.RoundRecord``),
  which also carries ``connected_clients``.

Lines are appended and flushed one at a time; a crash can at worst cut the
last line short, and the reader skips such a line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from fedmnist.common.atomic import append_line, write_text_atomic
from fedmnist.results.records import Evaluation, Header, RoundRecord, now

log = logging.getLogger(__name__)


@dataclass
class LiveLog:
    """What a live log holds: its first header, round 0, the rounds and the latest client count."""

    header: Header = field(default_factory=dict)  # type: ignore[assignment]
    last_started: str | None = None  # A resumed run appends a header of its own.
    initial: Evaluation | None = None
    records: list[RoundRecord] = field(default_factory=list)  # In the order written (a resumed run may redo one).
    connected_clients: int | None = None


class LiveLogWriter:
    """Appends a run's lines to its live log at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def start(self, header: Header, *, resume: bool = False) -> None:
        """Begin the log with ``header``; a resumed run appends its header to the log it continues.

        An earlier run's log is not here any more: it was moved with that run's
        other results (``fedmnist.results.archive``).
        """
        line = json.dumps(header, sort_keys=True)
        if resume:
            append_line(self.path, line)
        else:
            write_text_atomic(self.path, line + "\n")

    def initial(self, record: Evaluation) -> None:
        append_line(self.path, json.dumps({"initial": record}, sort_keys=True))

    def round(self, record: RoundRecord) -> None:
        append_line(self.path, json.dumps(record, sort_keys=True))

    def connected(self, count: int) -> None:
        """A client connected or left. Called from Flower's connection threads: a failed write only warns."""
        try:
            append_line(self.path, json.dumps({"connected_clients": count, "time": now()}))
        except OSError as error:
            log.warning("could not log the client count to %s: %s", self.path, error)


def read_live_log(path: str | Path) -> LiveLog:
    """Parse a live log; torn or foreign lines are skipped, and an unreadable file reads as empty."""
    result = LiveLog()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:  # Replaced or removed meanwhile.
        lines = []
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # A torn last line while the server writes it.
            continue
        if not isinstance(entry, dict):
            continue
        if "connected_clients" in entry:  # Round records and the connection lines.
            result.connected_clients = entry["connected_clients"]
        if "round" in entry:
            result.records.append(cast(RoundRecord, entry))  # JSON is untyped; the shape is the writer's.
        elif "initial" in entry:
            result.initial = entry["initial"]
        elif "config" in entry:
            result.header = result.header or cast(Header, entry)
            result.last_started = entry.get("started")
    return result
