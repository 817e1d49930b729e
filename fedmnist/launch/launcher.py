"""``./run.sh``: one server and N clients on this machine, watched until done.

On the classic runtime (and the simulation, with no client processes) it starts
``server.py``, waits until it listens (by then it has loaded and cached the
data, and resolved ``--dataset auto``), starts the clients (the server sends
them that data source and the run's other settings), streams the server's
progress, and stops everything it started if
any process fails or the user presses Ctrl-C. Each process's full output is
kept in ``OUT/logs/``. Beside them runs the web dashboard (``fedmnist.dashboard``),
which reads the run's files; its failure is reported and the run goes on.
On the Deployment Runtime the server is a SuperLink running the ServerApp and
the clients are SuperNodes (``fedmnist.runtimes.deployment``); the rest is the same.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

from fedmnist.common.cli import EXIT_USER_ERROR, RESUME_COMMAND, resume_command_for, run_cli, take_back_stop_signals
from fedmnist.common.errors import AlreadySaid, UserError
from fedmnist.common.ports import wait_until_listening
from fedmnist.common.project import PROJECT_ROOT
from fedmnist.launch.checks import check_before_starting
from fedmnist.launch.commands import client_command, dashboard_url, local_clients, server_command
from fedmnist.launch.dashboard_process import DashboardProcess
from fedmnist.launch.deployment_services import SERVER_STOP_SECONDS, DeploymentServices
from fedmnist.launch.flags import parse_args
from fedmnist.launch.processes import WATCH_SECONDS, ProcessGroup, read_lines, stream_log
from fedmnist.results.archive import RESULT_FOLDERS, archive_earlier_results
from fedmnist.results.run_lock import lock_results
from fedmnist.settings import defaults

LISTEN_TIMEOUT = 180.0  # Seconds the server may take to start listening.
STOP_SECONDS = 5.0  # How long a client or the dashboard may take to stop before it is killed.


class Launcher:
    """Starts one run's processes (``ProcessGroup``), watches them until done, and stops what it started.

    The runtime decides what the "server" is: ``server.py`` (classic, simulation), or
    ``flwr run`` beside a SuperLink and SuperNodes (``DeploymentServices``).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out).resolve()  # Children run in the project folder: pass absolute paths.
        if args.data_home:
            args.data_home = str(Path(args.data_home).expanduser().resolve())
        self.logs = self.out / "logs"
        self.certs = self.out / "certs"
        self.group = ProcessGroup(self.logs, append=args.resume)
        self.dashboard = DashboardProcess(args, self.out, self.certs, self.group)
        self.deployment = (
            DeploymentServices(args, self.out, self.certs, self.group) if args.runtime == "deployment" else None
        )
        self._streamer: threading.Thread | None = None

    def run(self) -> None:
        """Run the federation; whatever happens, stop every process started."""
        try:
            self._run()
        finally:
            self.stop_all()
            if self._streamer is not None:  # The server's last lines: what it saved, and where.
                self._streamer.join(timeout=2)

    def _run(self) -> None:
        started = time.monotonic()
        self._prepare_folder()
        if self.args.ws_clients and not os.environ.get(defaults.WS_TOKEN_VARIABLE):
            os.environ[defaults.WS_TOKEN_VARIABLE] = secrets.token_urlsafe(16)  # The dashboard's, by inheritance.
        self.dashboard.start()
        if self.deployment is not None:
            server = self.deployment.start()
        else:
            server = self.group.start("server", server_command(self.args, self.out, self.certs))
        self._streamer = threading.Thread(
            target=stream_log, args=(self.group.log("server"), server, self.group.log_starts["server"]), daemon=True
        )
        self._streamer.start()
        if local_clients(self.args):
            self._wait_until_listening(server)
        for partition_id in range(local_clients(self.args)):
            self.group.start(f"client_{partition_id}", client_command(self.args, self.certs, partition_id))
        if self.args.ws_clients:
            token = os.environ[defaults.WS_TOKEN_VARIABLE]  # Only these lines show it: whoever has it may join.
            print(
                f"waiting for {self.args.ws_clients} WebSocket client(s): open {dashboard_url(self.args)}client"
                f"?token={token} in a browser tab each, or run .venv/bin/python examples/ws_client.py --url "
                f"'ws{dashboard_url(self.args)[4:]}ws?token={token}'",
                flush=True,
            )
        self._wait_for_all()
        self._streamer.join(timeout=5)  # Let the last progress lines reach the console.
        print(f"done in {time.monotonic() - started:.1f} s; logs in {self.logs}", flush=True)
        self.dashboard.keep()

    def _prepare_folder(self) -> None:
        """Check the run, lock its folder, move an earlier run's results aside, and make certificates and logs/."""
        check_before_starting(self.args, self.out)
        self.group.lock = lock_results(self.out)  # Before any file is touched: one run per results folder.
        if not self.args.resume:
            archived = archive_earlier_results(self.out, (*RESULT_FOLDERS, "logs"))
            if archived is not None:
                print(f"the earlier run's results in {self.out} were moved to {archived}", flush=True)
        if self.args.tls and not (self.certs / "ca.pem").exists():
            from fedmnist.common.tls import generate_certificates

            generate_certificates(self.certs, "localhost")
            print(f"made development TLS certificates in {self.certs}", flush=True)
        try:
            self.logs.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create {self.logs}: {error.strerror or error}") from None

    def stop_all(self) -> None:
        """Stop every process still running; the server gets longer (on SIGTERM it saves the completed rounds)."""
        if self.deployment is not None:
            self.deployment.stop_flower_processes()
        dashboard = [self.dashboard.process] if self.dashboard.process is not None else []
        self.group.stop(dashboard, STOP_SECONDS, {"server": SERVER_STOP_SECONDS})
        if self.deployment is not None:
            self.deployment.clean_up()

    def _wait_until_listening(self, server: subprocess.Popen) -> None:
        try:
            if not wait_until_listening(self.args.port, server, LISTEN_TIMEOUT):
                raise self._server_failed(server.returncode)
        except TimeoutError:
            raise UserError(f"the server did not listen on port {self.args.port} within {LISTEN_TIMEOUT:g} s") from None

    def _wait_for_all(self) -> None:
        """Wait for every process. A failed server ends the run at once; a failed client does
        not (the server goes on while --min-clients remain), but the exit status reports it."""
        processes, services = self.group.processes, self.group.services
        server = processes["server"]
        reported: set[str] = set()
        while [p for p in processes.values() if p.poll() is None]:  # Polls every one (no short-circuit).
            if server.returncode not in (None, 0):
                raise self._server_failed(server.returncode)
            if services.get("superlink") and services["superlink"].poll() is not None:
                raise UserError(self._failure("superlink", services["superlink"].returncode))
            for name, process in {**processes, **services}.items():
                if process.returncode not in (None, 0) and name not in reported:
                    reported.add(name)
                    print(f"warning: {self._failure(name, process.returncode)}", file=sys.stderr, flush=True)
            self.dashboard.check()
            time.sleep(WATCH_SECONDS)
        failed = [name for name, process in processes.items() if process.returncode != 0]
        if "server" in failed:
            raise self._server_failed(server.returncode)
        if failed:
            raise UserError(f"the run finished, but {', '.join(failed)} failed (see above and {self.logs})")

    def _server_failed(self, returncode: int) -> UserError:
        """The error for a server that exited with ``returncode``.

        Status 2 is an error the server explained in one ``error:`` line, which the
        console showed already: it is not repeated, with its log's last lines, here.
        """
        if returncode == EXIT_USER_ERROR and "error: " in "\n".join(read_lines(self.group.log("server"))[-5:]):
            return AlreadySaid()
        return UserError(self._failure("server", returncode))

    def _failure(self, name: str, returncode: int) -> str:
        return self.group.failure(name, returncode, self.deployment.why_failed(name) if self.deployment else "")


CHECK_ONLY = "FEDMNIST_CHECK_ONLY"  # run.sh sets it to check the flags with plain python3, before any set-up.


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    check_only = os.environ.get(CHECK_ONLY) == "1"
    if argv[:1] == ["certs"]:  # ./run.sh certs --host NAME [--out DIR]
        from fedmnist.common.tls import main as make_certificates

        return None if check_only else make_certificates(argv[1:])
    if argv[:1] == ["keys"]:  # ./run.sh keys --clients N [--out DIR]
        from fedmnist.launch.node_keys import main as make_keys

        return None if check_only else make_keys(argv[1:])
    if argv[:1] == ["central"]:  # ./run.sh central --dataset D --clients N --model M ...
        from fedmnist.server.baseline import main as central

        return None if check_only else central(argv[1:])
    if argv[:1] in (["flwr"], ["flwr-stop"]):  # ./run.sh flwr run . ...; ./run.sh flwr-stop
        from fedmnist.runtimes.flwr_local import main as flwr

        return None if check_only else flwr(argv)
    if argv[:1] == ["dashboard"]:  # ./run.sh dashboard [--out DIR] [--dashboard-port N]
        from fedmnist.dashboard.serve import main as dashboard
        from fedmnist.dashboard.serve import parse_args as dashboard_args

        if check_only:
            dashboard_args(argv[1:], prog="./run.sh dashboard")
            return None
        return dashboard(argv[1:], out_default=str(PROJECT_ROOT), prog="./run.sh dashboard")
    args = parse_args(argv)
    if check_only:
        return None
    os.environ[RESUME_COMMAND] = resume_command_for(["./run.sh"], argv)  # For the stop message, ours and the server's.
    launcher = Launcher(args)
    # SIGTERM (e.g. from a CI timeout) is handled like Ctrl-C: stop the children, then exit;
    # a second Ctrl-C must not cut that short.
    take_back_stop_signals()
    run_cli(launcher.run)


if __name__ == "__main__":
    main()
