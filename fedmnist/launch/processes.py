"""The processes a run starts: each one's environment and log, starting and stopping them, and liveness (Linux)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO

from fedmnist.common.cli import is_start_up_noise
from fedmnist.common.project import PROJECT_ROOT
from fedmnist.results.run_lock import ResultsLock

# How often the launcher looks at its processes and the server's log: at 50 ms (the ports poll) the end of
# the server and its last lines reached the console up to 0.1 s late; a look costs a few system calls.
WATCH_SECONDS = 0.01


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
                time.sleep(WATCH_SECONDS)


class ProcessGroup:
    """The processes of one run, each ``python -u`` in the project folder with its output in ``logs/NAME.log``.

    ``processes`` are the run itself (the server and the clients: the run waits for
    them); ``services`` serve it and never end by themselves (the Deployment Runtime's
    SuperLink and SuperNodes). A resumed run (``append``) appends to the logs it continues.
    """

    def __init__(self, logs: Path, *, append: bool) -> None:
        self.logs, self.append = logs, append
        self.processes: dict[str, subprocess.Popen] = {}
        self.services: dict[str, subprocess.Popen] = {}
        self.log_starts: dict[
            str, int
        ] = {}  # Where each process's output begins in its log: a resumed run's own lines.
        self.lock: ResultsLock | None = None  # The results lock, which the server inherits.
        # The Deployment Runtime's Flower environment; its processes then get sessions of their own.
        self.flower_environment: dict[str, str] | None = None

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start(self, name: str, command: list[str], service: bool = False) -> subprocess.Popen:
        """Start a Python script (server.py, client.py; Flower's, by absolute path) as part of the run."""
        process = self.spawn(name, [str(PROJECT_ROOT / command[0]), *command[1:]])
        (self.services if service else self.processes)[name] = process
        return process

    def spawn(self, name: str, arguments: list[str]) -> subprocess.Popen:
        """``python -u ARGUMENTS``, its output in ``logs/NAME.log``; not waited for unless ``start`` added it."""
        log_file = open(self.log(name), "ab" if self.append else "wb")  # noqa: SIM115
        self.log_starts[name] = log_file.tell()
        lock = self.lock if name == "server" else None
        environment = {**child_environment(), **(lock.child_environment() if lock else {})}
        environment.update(self.flower_environment or {})
        process = subprocess.Popen(
            [sys.executable, "-u", *arguments],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=PROJECT_ROOT,
            env=environment,
            pass_fds=(lock.fd,) if lock else (),
            # Deployment: the terminal's Ctrl-C must reach only the launcher, which stops the
            # ServerApp first (so it saves the completed rounds), then the SuperLink and SuperNodes.
            start_new_session=self.flower_environment is not None,
        )
        log_file.close()
        return process

    def failure(self, name: str, returncode: int, why: str = "") -> str:
        """``name`` exited with ``returncode`` (``why``, if known), and its log's last lines."""
        last = [line for line in read_lines(self.log(name)) if not is_start_up_noise(line)][-5:]
        detail = "\n  ".join(last) if last else "(no output)"
        return f"{name} exited with status {returncode}{why}; last lines of {self.log(name)}:\n  {detail}"

    def stop(self, others: Iterable[subprocess.Popen], grace: float, longer: Mapping[str, float]) -> None:
        """Terminate every process still running (and ``others``), then kill what does not stop in time.

        Each gets ``grace`` seconds, or ``longer[name]``: the server first saves the completed rounds.
        """
        graces = {id(p): longer.get(name, grace) for name, p in {**self.services, **self.processes}.items()}
        running = [p for p in [*self.processes.values(), *self.services.values(), *others] if p.poll() is None]
        for process in running:
            process.terminate()
        started = time.monotonic()
        for process in running:
            try:
                process.wait(timeout=max(0.1, started + graces.get(id(process), grace) - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
