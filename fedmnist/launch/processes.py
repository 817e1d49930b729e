"""What the launcher needs to know of the processes it starts: their environment, logs and liveness (Linux)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from fedmnist.common.cli import is_start_up_noise

POLL_SECONDS = 0.05


POLL_SECONDS = 0.05


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, ended but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"  # A zombie has ended.
    except OSError:
        return False


def available_memory_gb() -> float:
    """Memory available to new processes (Linux MemAvailable: free plus reclaimable cache)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20  # kB to GB.
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30  # Elsewhere: all of it.


def child_environment() -> dict[str, str]:
    """The environment for server and clients: one TensorFlow thread pool thread each.

    All processes share this machine's cores, and the model is small: with
    TensorFlow's default (a thread per core in every process) the processes
    preempt each other, and rounds took 1.3-1.4x longer on 2 cores (docs/performance.md). A value the user set wins.
    """
    return {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", **os.environ}


def read_lines(path: Path) -> list[str]:
    """The lines of a log, or none if it cannot be read (not written yet, or removed)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def stream_log(path: Path, process: subprocess.Popen, start: int = 0, out: IO[str] = sys.stdout) -> None:
    """Copy ``path`` from byte ``start`` to the console as it grows, without TensorFlow's start-up noise."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        handle.seek(start)
        while True:
            line = handle.readline()
            if line:
                if not is_start_up_noise(line):
                    out.write(line)
                    out.flush()
            elif process.poll() is not None:
                return
            else:
                time.sleep(POLL_SECONDS)
