"""The web dashboard beside a run: started unless unwanted or its port is taken; it watches, it is not the run."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from fedmnist.common.cli import wait_for_process
from fedmnist.common.errors import UserError
from fedmnist.common.ports import listening
from fedmnist.launch.commands import dashboard_command, dashboard_url
from fedmnist.launch.processes import ProcessGroup


class DashboardProcess:
    """``fedmnist.dashboard`` on the run's folder: its failure is reported once and the run goes on."""

    def __init__(self, args: argparse.Namespace, out: Path, certs: Path, group: ProcessGroup) -> None:
        self.args, self.out, self.certs, self.group = args, out, certs, group
        self.process: subprocess.Popen | None = None
        self._reported = False

    def start(self) -> None:
        """Start it, unless ``--no-dashboard`` or its port is taken (then say so; WebSocket clients need it)."""
        a = self.args
        if a.no_dashboard:
            return
        if a.dashboard_port == a.port:
            raise UserError(f"--dashboard-port and --port are both {a.port}; choose two ports")
        if listening(a.dashboard_port, a.dashboard_host):
            if a.ws_clients:
                raise UserError(
                    f"dashboard port {a.dashboard_port} is in use, and --ws-clients need this run's "
                    "dashboard (choose --dashboard-port)"
                )
            print(
                f"note: dashboard port {a.dashboard_port} is in use (another dashboard?), so this run starts "
                f"none; one serving {self.out} shows this run too (or choose --dashboard-port)",
                flush=True,
            )
            return
        self.process = self.group.spawn("dashboard", dashboard_command(a, self.out, self.certs))
        print(f"dashboard: {dashboard_url(a)} (live; API docs at /docs)", flush=True)

    def check(self) -> None:
        """Say once if the dashboard stopped: the run goes on without it."""
        if self.process is None or self._reported or self.process.poll() is None:
            return
        self._reported = True
        print(
            f"warning: the dashboard stopped; training goes on. "
            f"{self.group.failure('dashboard', self.process.returncode)}",
            file=sys.stderr,
            flush=True,
        )

    def keep(self) -> None:
        """At a terminal, keep the dashboard up after the run until Ctrl-C, so its page stays readable."""
        if self.process is None or self.process.poll() is not None or not sys.stdin.isatty():
            return
        print(f"the dashboard stays up at {dashboard_url(self.args)}; press Ctrl-C to stop it", flush=True)
        try:
            wait_for_process(self.process)
        except KeyboardInterrupt:
            pass
