"""TCP ports on this machine: a free one, whether one listens, and waiting until one does.

A server about to bind its own address asks Flower (``flwr.supercore.address.is_port_in_use``);
these are for the launcher, the dashboard, the benchmarks and the tests, which watch
a port from outside.
"""

from __future__ import annotations

import socket
import subprocess
import time

POLL_SECONDS = 0.05


def free_port() -> int:
    """A TCP port nothing listens on now (the OS's choice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on ``port`` (checked on loopback for the any-interface hosts)."""
    address = "127.0.0.1" if host in ("0.0.0.0", "::", "localhost") else host
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
        return probe.connect_ex((address, port)) == 0


def wait_until_listening(port: int, process: subprocess.Popen, timeout: float) -> bool:
    """True once ``port`` accepts connections, False if ``process`` ends first; ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if listening(port):
            return True
        time.sleep(POLL_SECONDS)
    raise TimeoutError(f"nothing listened on port {port} within {timeout:g} s")
