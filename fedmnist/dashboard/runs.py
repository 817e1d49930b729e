"""Runs on disk, as the dashboard sees them: found under a folder, read from their history files.

A run is what one server wrote under ``OUT`` for ``--rounds N`` (``RunPaths``):
the live log ``history/history_N.jsonl`` while it goes, the summary
``history/history_N.json`` when it ends or is interrupted. Sweeps keep one
such folder per setting under ``OUT/sweep/<grid>/<setting>/``.

Run ids are the run's folder relative to the dashboard's folder, then
``history_N``: ``history_40`` for ``./run.sh``'s own run, and
``sweep/quick/fedavg_iid/history_2`` for a sweep's setting.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fedmnist.common.errors import UserError
from fedmnist.results.live_log import LiveLog, read_live_log
from fedmnist.results.paths import RunPaths
from fedmnist.results.records import RoundRecord, Summary, read_summary

RUN_FILE = re.compile(r"^history_(\d+)(?:\.partial)?\.jsonl?$")  # The live log, the summary or a partial one.
Status = Literal["waiting", "running", "finished", "interrupted"]


class RunGone(LookupError):
    """The run's files disappeared (or never existed)."""


@dataclass(frozen=True)
class Run:
    """One run's id and where its files are."""

    id: str
    paths: RunPaths
    base: Path  # The dashboard's folder (resolved): no file outside it is ever read.

    def contains(self, path: Path) -> bool:
        """Whether ``path`` exists and really lies in the dashboard's folder (a symlink out does not)."""
        return _inside(path, self.base)

    @property
    def log_path(self) -> Path | None:
        return self.paths.round_log if self.contains(self.paths.round_log) else None

    @property
    def summary_path(self) -> Path | None:
        """The complete run's summary, else a stopped run's partial one, else None."""
        return next((path for path in (self.paths.json, self.paths.as_partial().json) if self.contains(path)), None)

    def files(self) -> dict[str, Path]:
        """The run's pictures and result files a person may download, by name relative to its folder."""
        paths, partial = self.paths, self.paths.as_partial()
        candidates = [
            *sorted(paths.plots_dir.glob("*.png")),
            paths.round_log,
            paths.json,
            paths.pickle,
            paths.mistakes,
            partial.json,
            partial.pickle,
            paths.model,
            partial.model,
        ]
        return {path.relative_to(paths.root).as_posix(): path for path in candidates if self.contains(path)}

    def signature(self) -> tuple[Any, ...]:
        """Changes whenever the server writes to this run's log or summary, or adds a file (a plot)."""
        return (_stat_key(self.log_path), _stat_key(self.summary_path), tuple(sorted(self.files())))

    def updated(self) -> float:
        """When the server last wrote to this run (Unix time), 0 if its files are gone."""
        times = [_mtime(path) or 0 for path in (self.log_path, self.summary_path)]
        return max(times, default=0) / 1e9


@dataclass
class RunSnapshot:
    """Everything known about a run at one moment, with non-finite numbers as None."""

    run: Run
    status: Status
    config: dict[str, Any]
    data_source: str | None
    started: str | None
    finished: str | None
    updated: float
    initial: dict[str, Any] | None
    records: list[RoundRecord] = field(default_factory=list)
    connected_clients: int | None = None  # As last logged: a client arriving or leaving, or a round starting.
    label_histograms: list[list[int]] | None = None  # Examples of each digit per client.
    files: list[str] = field(default_factory=list)  # Run.files(): its pictures and result files.
    name: str | None = None  # --name, or the one the server derived from the settings.

    @property
    def rounds_total(self) -> int:
        return int(self.config.get("rounds", self.run.paths.rounds))


def find_runs(base: Path) -> dict[str, Run]:
    """Every run under ``base``, by id, newest first.

    ``base`` is an ``--out`` folder (its own run, its sweeps, and the earlier
    runs kept under ``runs/``) or a ``history`` folder itself. Folders that
    are symlinks out of ``base`` are not followed.
    """
    base = base.resolve()
    if _run_files(base):  # A history folder given directly: its runs belong to its parent.
        roots, relative_to = [base.parent], base.parent
    else:
        patterns = ("sweep/*/*", "runs/*", "runs/*/sweep/*/*")
        found = {path for pattern in patterns for path in base.glob(pattern) if (path / "history").is_dir()}
        roots, relative_to = [base, *sorted(found)], base
    runs = []
    for root in roots:
        if not _inside(root / "history", relative_to):
            continue
        for rounds in sorted(_run_files(root / "history")):
            folder = root.relative_to(relative_to).as_posix()
            name = f"history_{rounds}"
            run = Run(id=name if folder == "." else f"{folder}/{name}", paths=RunPaths(root, rounds), base=relative_to)
            if run.log_path or run.summary_path:  # Not when its only files are symlinks out of the folder.
                runs.append(run)
    runs.sort(key=lambda run: run.updated(), reverse=True)
    return {run.id: run for run in runs}


def read_run(run: Run) -> RunSnapshot:
    """The run as its files describe it now; raises RunGone when it has none."""
    log_path, summary_path = run.log_path, run.summary_path
    log_time, summary_time = _mtime(log_path), _mtime(summary_path)
    if log_time is None and summary_time is None:
        raise RunGone(run.id)
    log = read_live_log(log_path) if log_path is not None and log_time is not None else LiveLog()
    header: dict[str, Any] = dict(log.header)  # Overlaid with the summary's fields below.
    initial, records = log.initial, log.records
    summary = _read_summary(summary_path) if summary_path is not None and summary_time is not None else None
    if (
        summary is not None
        and summary_time is not None
        and log_time is not None
        and not _same_run(summary, summary_time, log, log_time)
    ):
        summary = None  # It belongs to an earlier run, or to this run before it was resumed.
    if summary is not None:
        status: Status = "interrupted" if "interrupted_after_round" in summary else "finished"
        records = summary.get("rounds") or records
        initial = summary.get("initial") or initial
        kept = ("config", "data_source", "label_histograms", "name")
        saved: dict[str, Any] = dict(summary)
        header = {**header, **{key: saved[key] for key in kept if key in saved}}
    else:
        status = "running" if records else "waiting"
    return RunSnapshot(
        run=run,
        status=status,
        config=dict(header.get("config") or {}),
        data_source=header.get("data_source"),
        started=header.get("started"),
        finished=summary.get("finished") if summary else None,
        updated=max(time for time in (log_time, summary_time) if time is not None) / 1e9,
        initial=finite(initial) or None,
        records=finite(_by_round(records)),
        connected_clients=log.connected_clients,
        label_histograms=header.get("label_histograms"),
        files=sorted(run.files()),
        name=header.get("name"),
    )


def _same_run(summary: Summary, summary_time: int, log: LiveLog, log_time: int) -> bool:
    """Whether the summary was written by the server process that wrote the log's last header."""
    if "started" in summary and log.last_started is not None:
        return summary["started"] == log.last_started
    return summary_time >= log_time  # Summaries from before "started" was saved: the newer file wins.


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value


def _by_round(records: list[RoundRecord]) -> list[RoundRecord]:
    """One record per round, the latest kept: a resumed run may redo a round it had logged."""
    latest = {int(record["round"]): record for record in records}
    return [latest[number] for number in sorted(latest)]


def _read_summary(path: Path) -> Summary | None:
    try:
        return read_summary(path)
    except UserError:  # Unreadable summary: show the live log instead.
        return None


def _run_files(folder: Path) -> set[int]:
    """The ``N`` of every ``history_N.json`` or ``.jsonl`` in ``folder``."""
    if not folder.is_dir():
        return set()
    return {int(match.group(1)) for path in folder.iterdir() if (match := RUN_FILE.match(path.name))}


def _inside(path: Path, base: Path) -> bool:
    """Whether ``path`` exists and resolves (symlinks followed) to somewhere under ``base``."""
    try:
        return path.resolve(strict=True).is_relative_to(base)
    except (OSError, RuntimeError):
        return False


def _mtime(path: Path | None) -> int | None:
    """Modification time in nanoseconds: a summary and the log's last line can share a millisecond."""
    if path is None:
        return None
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _stat_key(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)
