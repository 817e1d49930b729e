"""Helpers the benchmark scripts share: free ports, quiet processes and waiting for a server to listen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # The project, for scripts run as bench/NAME.py.
from fedmnist.common.ports import free_port, wait_until_listening  # noqa: F401  (re-exported for the benchmarks)


def start_quietly(arguments: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start ``arguments`` in the project folder with no input and its output discarded (timed runs)."""
    return subprocess.Popen(
        arguments, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, **options
    )


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Return once ``port`` accepts connections; raise if ``process`` dies or time runs out."""
    if not wait_until_listening(port, process, timeout):
        raise RuntimeError(f"server exited with {process.returncode} before listening")
