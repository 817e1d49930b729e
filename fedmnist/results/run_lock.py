"""One run per results folder: a lock that a live run holds and a dead run cannot leave stuck.

``lock_results(out)`` takes an exclusive ``flock`` on ``OUT/.fedmnist.lock``.
The kernel drops it when the process ends, however it ends (even ``kill -9``),
so there is nothing stale to clean up. A second run on the same ``--out`` is
refused with one line naming the run that holds it, before it touches any
result file.

``./run.sh`` takes the lock first and hands it to its ``server.py``: the child
inherits the open lock file (its descriptor number in ``FEDMNIST_RESULTS_LOCK_FD``),
and the lock is held until both have ended. On the Deployment Runtime Flower
starts the ServerApp with its descriptors closed; ``./run.sh`` then keeps the
lock and names itself in ``FEDMNIST_RESULTS_LOCK_HOLDER`` for the ServerApp.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fedmnist.common.errors import UserError

LOCK_FILE = ".fedmnist.lock"
INHERITED_FD = "FEDMNIST_RESULTS_LOCK_FD"
# A process the lock cannot be handed to (Flower starts the ServerApp with its descriptors
# closed) may still run under it: the holder's pid in this variable says the lock is held for it.
HOLDER_PID = "FEDMNIST_RESULTS_LOCK_HOLDER"


class ResultsInUse(UserError):
    """Another live run writes to this results folder."""


@dataclass(frozen=True)
class ResultsLock:
    """A held lock on a results folder: ``fd`` stays open (and locked) for the process's life."""

    path: Path
    fd: int

    def child_environment(self) -> dict[str, str]:
        """Environment entries that hand this lock to a child started with ``pass_fds=(fd,)``."""
        return {INHERITED_FD: str(self.fd)}

    def release(self) -> None:
        """Give the lock back before the process ends (a process that runs several runs, like a ServerApp's)."""
        os.close(self.fd)


def lock_results(out: str | os.PathLike[str]) -> ResultsLock:
    """Lock ``out`` for this run, or raise ResultsInUse (or UserError if it cannot be created)."""
    folder = Path(out)
    path = folder / LOCK_FILE
    inherited = _inherited(path)
    if inherited is not None:
        return inherited
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise UserError(f"cannot use {folder} for results: {error.strerror or error}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if _held_for_us(fd):
            return ResultsLock(path, fd)
        holder = _describe_holder(fd)
        os.close(fd)
        raise ResultsInUse(
            f"{folder} is in use by another run{holder}; wait for it to finish, stop it, or choose another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "started": datetime.now(UTC).isoformat(timespec="seconds")}).encode())
    return ResultsLock(path, fd)


def _inherited(path: Path) -> ResultsLock | None:
    """The lock a parent (./run.sh) holds on ``path`` and passed down, if it did."""
    value = os.environ.get(INHERITED_FD, "")
    if not value.isdigit():
        return None
    fd = int(value)
    try:
        same_file = os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return None
    return ResultsLock(path, fd) if same_file else None


def holder_environment(lock: ResultsLock) -> dict[str, str]:
    """Environment entries saying that this process holds ``lock`` for the processes started with them."""
    return {HOLDER_PID: str(os.getpid())}


def _held_for_us(fd: int) -> bool:
    """Whether the lock's holder is the process that started us and said it holds it for us."""
    try:
        return int(json.loads(os.pread(fd, 4096, 0))["pid"]) == int(os.environ.get(HOLDER_PID, "-1"))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _describe_holder(fd: int) -> str:
    """`` (pid 123, started ...)`` from the lock file, or "" when it says nothing readable."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f" (pid {int(holder['pid'])}, started {holder['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
