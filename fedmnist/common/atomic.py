"""Crash-safe file writes: a reader sees the old file or the new one, never half."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

TEMPORARY_MARK = ".tmp-"  # In every temporary file's name: `.history_40.json.tmp-k3j2.json`.


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is one of ``atomic_path``'s temporary files (left behind if a process was killed)."""
    return path.name.startswith(".") and TEMPORARY_MARK in path.name


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, secret: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The temporary file lives in the same directory so that the final
    ``os.replace`` is a rename on one file system, which POSIX makes atomic.
    On any error the temporary file is removed and ``path`` is left untouched;
    a process killed mid-write leaves it, for ``fedmnist.results.archive`` to remove
    at the next run. The file gets the mode the umask gives new files, or
    0600 (owner only, from its creation on) when it is a ``secret`` such as
    a private key: a chmod after the move would leave it readable meanwhile.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}{TEMPORARY_MARK}", suffix=target.suffix or ".tmp"
    )
    os.fchmod(handle, 0o600 if secret else 0o666 & ~_umask())
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)  # The only way to read it is to set it; put it straight back.
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object], *, secret: bool = False) -> Path:
    """Call ``write(file)`` on a temporary binary file, then move it to ``path`` (0600 if ``secret``)."""
    with atomic_path(path, secret=secret) as tmp, open(tmp, "wb") as handle:
        write(handle)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, secret: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (0600 if ``secret``)."""
    return write_atomic(path, lambda handle: handle.write(data), secret=secret)


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one line and flush it to disk.

    Appends are not renames: a crash can at worst cut the last line short,
    which readers of the JSONL log skip (see ``fedmnist.results.live_log``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")
        handle.flush()
        os.fsync(handle.fileno())
