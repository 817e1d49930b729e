"""Helpers the benchmark scripts share: free ports, quiet processes and waiting for a server to listen."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # The project, for scripts run as bench/NAME.py.
from fedmnist.runtimes.deployment import free_port  # noqa: F401  (re-exported for the benchmarks and tests)


def start_quietly(arguments: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start ``arguments`` in the project folder with no input and its output discarded (timed runs)."""
    return subprocess.Popen(
        arguments, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, **options
    )


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Return once ``port`` accepts connections; raise if ``process`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout:g} s")
