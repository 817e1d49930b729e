"""Earlier runs' results are kept, never overwritten: a new run first moves them aside.

A run writes its results at the top of ``--out`` (``history/``, ``models/``,
``plots/``, ``checkpoints/``, ``tensorboard/``; ``./run.sh`` adds ``logs/``), where docs/outputs.md
says they are. Before it writes anything, the results an earlier run left
there move, folders and all, to ``OUT/runs/<started>_history_<rounds>/``
(named after the earlier run's start, from its own files), where the dashboard
lists them too. ``--resume`` moves nothing: it continues the run that is there.

Temporary files that a killed process left behind (``.NAME.tmp-*``, see
``fedmnist.common.atomic``) are removed first; the results lock
(``fedmnist.results.run_lock``) guarantees that no live process is writing them.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from fedmnist.common.atomic import is_temporary
from fedmnist.common.errors import UserError
from fedmnist.results.live_log import read_live_log
from fedmnist.results.records import read_summary

RESULT_FOLDERS = ("history", "models", "plots", "checkpoints", "tensorboard")
RUNS_FOLDER = "runs"


def archive_earlier_results(out: str | os.PathLike[str], folders: tuple[str, ...] = RESULT_FOLDERS) -> Path | None:
    """Move the earlier run's ``folders`` (paths relative to ``out``) to ``out/runs/<label>/``.

    Returns where they went, or None when there was nothing to keep (logs without
    results are overwritten: that attempt failed before it saved anything).
    """
    root = Path(out)
    for name in folders:
        remove_stale_temporaries(root / name)
    present = [name for name in folders if _holds_files(root / name)]
    if not any(name in RESULT_FOLDERS for name in present):
        return None  # Logs alone are an attempt that failed before its first result: nothing to keep.
    target = _free_name(root / RUNS_FOLDER / _label([root / name for name in present]))
    try:
        for name in present:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(root / name, target / name)
    except OSError as error:
        raise UserError(f"cannot move the earlier results in {root} to {target}: {error.strerror or error}") from None
    return target


def remove_stale_temporaries(folder: Path) -> None:
    """Delete what interrupted atomic writes left in ``folder`` (and below)."""
    if not folder.is_dir():
        return
    for path in folder.rglob(".*"):
        if is_temporary(path) and not path.is_symlink():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(path.is_file() for path in folder.rglob("*"))


def _label(folders: list[Path]) -> str:
    """``2026-11-29T13-55-02_history_40``: when the earlier run started (UTC), and its run file's name.

    Read from the newest history file in ``folders``; failing that, the newest file's time.
    """
    files = [path for folder in folders for path in folder.rglob("*") if path.is_file()]
    logs = sorted(
        (path for path in files if path.name.startswith("history_") and ".json" in path.name),
        key=lambda path: path.stat().st_mtime,
    )
    for path in reversed(logs):
        started = _started(path)
        if started:
            return f"{started.replace(':', '-').split('+')[0]}_{path.name.split('.')[0]}"
    newest = max((path.stat().st_mtime for path in files), default=0.0)
    return datetime.fromtimestamp(newest, UTC).strftime("%Y-%m-%dT%H-%M-%S")


def _started(path: Path) -> str | None:
    """The ``started`` time written in a live log's first line or a summary."""
    try:
        started = (read_live_log(path).header if path.suffix == ".jsonl" else read_summary(path)).get("started")
    except UserError:
        return None
    return started if isinstance(started, str) and started[:4].isdigit() else None


def _free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... whichever does not exist yet."""
    candidate, number = path, 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate
