"""The Deployment Runtime on this machine: a SuperLink, a registered SuperNode per client, and ``flwr run``.

The SuperLink and SuperNodes are services (they never end by themselves); ``flwr run``
of this project is the run's "server", which streams the ServerApp's log. Stopping
early must reach the ServerApp first (it saves the completed rounds), then the
processes Flower started for it, before the services stop.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from fedmnist.common.cli import alive
from fedmnist.common.errors import UserError
from fedmnist.common.ports import POLL_SECONDS, free_port, wait_until_listening
from fedmnist.common.project import PROJECT_ROOT
from fedmnist.launch.deployment_logs import refused_supernode, say_what_was_saved
from fedmnist.launch.processes import ProcessGroup

LISTEN_TIMEOUT = 180.0  # Seconds the SuperLink may take to start listening.
SERVER_STOP_SECONDS = 30.0  # The ServerApp first saves the completed rounds (about 3 s here).
FLWR_RUN_STOP_SECONDS = 10.0  # flwr run streams the logs of a stopped run, then ends.


class DeploymentServices:
    """Starts and stops one run's Flower Deployment Runtime processes, in ``group``."""

    def __init__(self, args: argparse.Namespace, out: Path, certs: Path, group: ProcessGroup) -> None:
        self.args, self.out, self.certs, self.group = args, out, certs, group
        self.flower_home: Path | None = None  # FLWR_HOME for this run's Flower processes; removed at the end.
        self.runtime_ports: list[int] = []  # Each SuperNode's runtime API, its ClientApps' address.

    def start(self) -> subprocess.Popen:
        """A SuperLink on --port and a SuperNode per client, then ``flwr run`` of this project: the "server"."""
        from fedmnist.common.tls import generate_certificates
        from fedmnist.launch.node_keys import ensure_node_keys
        from fedmnist.runtimes import deployment
        from fedmnist.runtimes.server_app import run_config_from

        a = self.args
        if not (self.certs / "ca.pem").exists():
            generate_certificates(self.certs, "localhost")
        keys = ensure_node_keys(self.out / "keys", a.clients)  # Kept: a resumed run's SuperNodes are the same.
        self.flower_home = Path(tempfile.mkdtemp(prefix="fedmnist-flwr-"))
        run_config = deployment.write_flower_home(
            self.flower_home, a.port, run_config_from({**vars(a), "out": str(self.out)}), self.certs
        )
        self.group.flower_environment = deployment.environment(self.flower_home, self.group.lock, a.data_home)
        superlink = self.group.start("superlink", deployment.superlink_command(a.port, self.certs), service=True)
        if not wait_until_listening(a.port, superlink, LISTEN_TIMEOUT):
            raise UserError(self.group.failure("superlink", superlink.returncode))
        self._register_supernodes([public for _, public in keys])
        for partition_id, (private, _) in enumerate(keys):
            self.runtime_ports.append(free_port())
            command = deployment.supernode_command(
                a.port, self.runtime_ports[-1], partition_id, a.clients, self.certs, private
            )
            self.group.start(f"client_{partition_id}", command, service=True)
        print(
            f"Flower Deployment Runtime: SuperLink on 127.0.0.1:{a.port} (TLS, SuperNode authentication), "
            f"{a.clients} registered SuperNodes (keys in {self.out / 'keys'}); each message starts a "
            "flwr-clientapp process",
            flush=True,
        )
        app = deployment.stage_app(PROJECT_ROOT, self.flower_home)
        return self.group.start("server", deployment.flwr_run_command(app, run_config))

    def why_failed(self, name: str) -> str:
        """What a SuperNode's log says about why it ended, or ""."""
        if name in self.group.services and name.startswith("client_") and refused_supernode(self.group.log(name)):
            return (
                " (the SuperLink refused this SuperNode: its public key is not registered; "
                "flwr supernode register KEY.pub, docs/runtimes.md: A client on another machine)"
            )
        return ""

    def stop_flower_processes(self) -> None:
        """Before the services stop: the ServerApp (which saves), then the processes Flower started."""
        from fedmnist.runtimes.deployment import clientapp_pids, helper_pids, trainer_pids

        self._stop_serverapp()
        helpers = helper_pids([process.pid for process in self.group.services.values()])
        for pid in [*helpers, *clientapp_pids(self.runtime_ports), *trainer_pids(helpers)]:
            with contextlib.suppress(ProcessLookupError):  # Ended meanwhile.
                os.kill(pid, signal.SIGTERM)

    def clean_up(self) -> None:
        if self.flower_home is not None:
            shutil.rmtree(self.flower_home, ignore_errors=True)

    def _register_supernodes(self, public_keys: list[Path]) -> None:
        """``flwr supernode register`` each public key with the SuperLink, all at once (each takes 3 s here)."""
        from fedmnist.runtimes import deployment

        registering = [
            self.group.spawn(f"register_{index}", deployment.register_command(key))
            for index, key in enumerate(public_keys)
        ]
        for index, process in enumerate(registering):
            if process.wait() != 0:
                raise UserError(
                    f"could not register SuperNode {index}'s key. "
                    f"{self.group.failure(f'register_{index}', process.returncode)}"
                )
            self.group.log(f"register_{index}").unlink(missing_ok=True)  # Only a failure's log says anything.

    def _stop_serverapp(self) -> None:
        """Stopped early: SIGTERM the ServerApp first, so it saves the completed rounds.

        Flower starts it in a session of its own, so the terminal's Ctrl-C does not reach it,
        and stopping the SuperLink would kill it before it saved anything.
        """
        superlink = self.group.services.get("superlink")
        if superlink is None or superlink.poll() is not None:
            return
        from fedmnist.runtimes.deployment import serverapp_pids

        pids = serverapp_pids(self.args.port)
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + SERVER_STOP_SECONDS
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if alive(pid)]
            time.sleep(POLL_SECONDS)
        streaming = self.group.processes.get("server")  # flwr run: let it stream the ServerApp's last lines and end.
        if streaming is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                streaming.wait(timeout=FLWR_RUN_STOP_SECONDS)
        say_what_was_saved(self.out, self.args.rounds, self.group.logs)
