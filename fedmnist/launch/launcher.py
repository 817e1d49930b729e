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

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fedmnist.common.cli import (
    EXIT_USER_ERROR,
    RESUME_COMMAND,
    is_start_up_noise,
    resume_command_for,
    run_cli,
    take_back_stop_signals,
    wait_for_process,
)
from fedmnist.common.errors import AlreadySaid, UserError
from fedmnist.common.project import PROJECT_ROOT
from fedmnist.dashboard.serve import port_in_use
from fedmnist.launch.checks import check_before_starting
from fedmnist.launch.commands import client_command, dashboard_command, dashboard_url, local_clients, server_command
from fedmnist.launch.deployment_logs import refused_supernode, say_what_was_saved
from fedmnist.launch.flags import parse_args
from fedmnist.launch.processes import POLL_SECONDS, alive, child_environment, read_lines, stream_log
from fedmnist.results.archive import RESULT_FOLDERS, archive_earlier_results
from fedmnist.results.run_lock import ResultsLock, lock_results

LISTEN_TIMEOUT = 180.0  # Seconds the server may take to start listening.
STOP_SECONDS = 5.0  # How long a client or the dashboard may take to stop before it is killed.
SERVER_STOP_SECONDS = 30.0  # The server first saves the completed rounds (about 3 s here).
FLWR_RUN_STOP_SECONDS = 10.0  # flwr run streams the logs of a stopped run, then ends.


class Launcher:
    """Starts, watches and stops the server and client processes of one run."""

    def __init__(self, args) -> None:
        self.args = args
        self.out = Path(args.out).resolve()  # Children run in the project folder: pass absolute paths.
        if args.data_home:
            args.data_home = str(Path(args.data_home).expanduser().resolve())
        self.logs = self.out / "logs"
        self.certs = self.out / "certs"
        self.lock: ResultsLock | None = None
        self.processes: dict[str, subprocess.Popen] = {}  # Server and clients: the run waits for these.
        # Deployment: the SuperLink and the SuperNodes serve the run (and never end by themselves).
        self.services: dict[str, subprocess.Popen] = {}
        self.flower_home: Path | None = None  # Deployment: FLWR_HOME for this run's Flower processes.
        self.runtime_ports: list[int] = []  # Deployment: each SuperNode's runtime API, its ClientApps' address.
        self.dashboard: subprocess.Popen | None = None  # Watches the run; not part of it.
        self._streamer: threading.Thread | None = None
        self._log_starts: dict[str, int] = {}  # Where each process's output begins in its log file.

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
        check_before_starting(self.args, self.out)
        self.lock = lock_results(self.out)  # Before any file is touched: one run per results folder.
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
        self._start_dashboard()
        server = (
            self._start_deployment()
            if self.args.runtime == "deployment"
            else self._start("server", server_command(self.args, self.out, self.certs))
        )
        self._streamer = threading.Thread(
            target=stream_log, args=(self.logs / "server.log", server, self._log_starts["server"]), daemon=True
        )
        self._streamer.start()
        if local_clients(self.args):
            self._wait_until_listening(server)
        for partition_id in range(local_clients(self.args)):
            self._start(f"client_{partition_id}", client_command(self.args, self.certs, partition_id))
        if self.args.ws_clients:
            print(
                f"waiting for {self.args.ws_clients} WebSocket client(s): open {dashboard_url(self.args)}client "
                f"in a browser tab each, or run .venv/bin/python examples/ws_client.py --url "
                f"ws{dashboard_url(self.args)[4:]}ws",
                flush=True,
            )
        self._wait_for_all()
        self._streamer.join(timeout=5)  # Let the last progress lines reach the console.
        print(f"done in {time.monotonic() - started:.1f} s; logs in {self.logs}", flush=True)
        self._keep_dashboard()

    def stop_all(self) -> None:
        """Terminate every process still running, then kill what does not stop in time.

        The server gets longer: on SIGTERM it saves the completed rounds first.
        """
        self._stop_serverapp()
        everything = [*self.processes.values(), *self.services.values(), *([self.dashboard] if self.dashboard else [])]
        if self.services:
            from fedmnist.runtimes.deployment import clientapp_pids, helper_pids

            helpers = helper_pids([process.pid for process in self.services.values()])
            for pid in [*helpers, *clientapp_pids(self.runtime_ports)]:
                with contextlib.suppress(ProcessLookupError):  # Ended meanwhile.
                    os.kill(pid, signal.SIGTERM)
        running = [p for p in everything if p.poll() is None]
        for process in running:
            process.terminate()
        started = time.monotonic()
        for process in running:
            grace = SERVER_STOP_SECONDS if process is self.processes.get("server") else STOP_SECONDS
            try:
                process.wait(timeout=max(0.1, started + grace - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
        if self.flower_home is not None:
            shutil.rmtree(self.flower_home, ignore_errors=True)

    def _start_deployment(self) -> subprocess.Popen:
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
        superlink = self._start("superlink", deployment.superlink_command(a.port, self.certs), service=True)
        self._wait_until_listening(superlink)
        self._register_supernodes([public for _, public in keys])
        for partition_id, (private, _) in enumerate(keys):
            self.runtime_ports.append(deployment.free_port())
            command = deployment.supernode_command(
                a.port, self.runtime_ports[-1], partition_id, a.clients, self.certs, private
            )
            self._start(f"client_{partition_id}", command, service=True)
        print(
            f"Flower Deployment Runtime: SuperLink on 127.0.0.1:{a.port} (TLS, SuperNode authentication), "
            f"{a.clients} registered SuperNodes (keys in {self.out / 'keys'}); each message starts a "
            "flwr-clientapp process",
            flush=True,
        )
        return self._start("server", deployment.flwr_run_command(PROJECT_ROOT, run_config))

    def _register_supernodes(self, public_keys: list[Path]) -> None:
        """``flwr supernode register`` each public key with the SuperLink, all at once (each takes 3 s here)."""
        from fedmnist.runtimes import deployment

        registering = [
            self._spawn(f"register_{index}", deployment.register_command(key)) for index, key in enumerate(public_keys)
        ]
        for index, process in enumerate(registering):
            if process.wait() != 0:
                raise UserError(
                    f"could not register SuperNode {index}'s key. "
                    f"{self._failure(f'register_{index}', process.returncode)}"
                )
            (self.logs / f"register_{index}.log").unlink(missing_ok=True)  # Only a failure's log says anything.

    def _stop_serverapp(self) -> None:
        """Deployment, stopped early: SIGTERM the ServerApp first, so it saves the completed rounds.

        Flower starts it in a session of its own, so the terminal's Ctrl-C does not reach it,
        and stopping the SuperLink would kill it before it saved anything.
        """
        if "superlink" not in self.services or self.services["superlink"].poll() is not None:
            return
        from fedmnist.runtimes.deployment import serverapp_pids

        pids = serverapp_pids(self.args.port)
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + SERVER_STOP_SECONDS
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if alive(pid)]
            time.sleep(POLL_SECONDS)
        streaming = self.processes.get("server")  # flwr run: let it stream the ServerApp's last lines and end.
        if streaming is not None:
            try:
                streaming.wait(timeout=FLWR_RUN_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        say_what_was_saved(self.out, self.args.rounds, self.logs)

    def _start_dashboard(self) -> None:
        """Start the web dashboard on this run's folder, unless unwanted or its port is taken."""
        a = self.args
        if a.no_dashboard:
            return
        if a.dashboard_port == a.port:
            raise UserError(f"--dashboard-port and --port are both {a.port}; choose two ports")
        if port_in_use(a.dashboard_host, a.dashboard_port):
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
        self.dashboard = self._spawn("dashboard", dashboard_command(self.args, self.out, self.certs))
        print(f"dashboard: {dashboard_url(self.args)} (live; API docs at /docs)", flush=True)

    def _check_dashboard(self, reported: set[str]) -> None:
        """Say once if the dashboard stopped: the run goes on without it."""
        if self.dashboard is not None and self.dashboard.poll() is not None and "dashboard" not in reported:
            reported.add("dashboard")
            print(
                f"warning: the dashboard stopped; training goes on. {self._failure('dashboard', self.dashboard.returncode)}",
                file=sys.stderr,
                flush=True,
            )

    def _keep_dashboard(self) -> None:
        """At a terminal, keep the dashboard up after the run until Ctrl-C, so its page stays readable."""
        if self.dashboard is None or self.dashboard.poll() is not None or not sys.stdin.isatty():
            return
        print(f"the dashboard stays up at {dashboard_url(self.args)}; press Ctrl-C to stop it", flush=True)
        try:
            wait_for_process(self.dashboard)
        except KeyboardInterrupt:
            pass

    def _start(self, name: str, command: list[str], service: bool = False) -> subprocess.Popen:
        """Start a Python script (server.py, client.py; Flower's, by absolute path) as part of the run."""
        process = self._spawn(name, [str(PROJECT_ROOT / command[0]), *command[1:]])
        (self.services if service else self.processes)[name] = process
        return process

    def _spawn(self, name: str, arguments: list[str]) -> subprocess.Popen:
        """``python -u ARGUMENTS`` in the project folder, its output in ``logs/NAME.log``.

        The server inherits the results lock. A resumed run appends to the logs it continues.
        """
        log_file = open(self.logs / f"{name}.log", "ab" if self.args.resume else "wb")  # noqa: SIM115
        self._log_starts[name] = log_file.tell()  # A resumed run's console shows only its own lines.
        lock = self.lock if name == "server" and self.lock is not None else None
        environment = {**child_environment(), **(lock.child_environment() if lock else {})}
        if self.flower_home is not None:
            from fedmnist.runtimes.deployment import environment as flower_environment

            environment.update(flower_environment(self.flower_home, self.lock, self.args.data_home))
        process = subprocess.Popen(
            [sys.executable, "-u", *arguments],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=PROJECT_ROOT,
            env=environment,
            pass_fds=(lock.fd,) if lock else (),
            # Deployment: the terminal's Ctrl-C must reach only this launcher, which stops the
            # ServerApp first (so it saves the completed rounds), then the SuperLink and SuperNodes.
            start_new_session=self.flower_home is not None,
        )
        log_file.close()
        return process

    def _wait_until_listening(self, server: subprocess.Popen) -> None:
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise self._server_failed(server.returncode)
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.args.port)) == 0:
                    return
            time.sleep(POLL_SECONDS)
        raise UserError(f"the server did not listen on port {self.args.port} within {LISTEN_TIMEOUT:g} s")

    def _wait_for_all(self) -> None:
        """Wait for every process. A failed server ends the run at once; a failed client does
        not (the server goes on while --min-clients remain), but the exit status reports it."""
        server = self.processes["server"]
        reported: set[str] = set()
        while [p for p in self.processes.values() if p.poll() is None]:  # Polls every one (no short-circuit).
            if server.returncode not in (None, 0):
                raise self._server_failed(server.returncode)
            if self.services.get("superlink") and self.services["superlink"].poll() is not None:
                raise UserError(self._failure("superlink", self.services["superlink"].returncode))
            for name, process in {**self.processes, **self.services}.items():
                if process.returncode not in (None, 0) and name not in reported:
                    reported.add(name)
                    print(f"warning: {self._failure(name, process.returncode)}", file=sys.stderr, flush=True)
            self._check_dashboard(reported)
            time.sleep(POLL_SECONDS)
        failed = [name for name, process in self.processes.items() if process.returncode != 0]
        if "server" in failed:
            raise self._server_failed(server.returncode)
        if failed:
            raise UserError(f"the run finished, but {', '.join(failed)} failed (see above and {self.logs})")

    def _server_failed(self, returncode: int) -> UserError:
        """The error for a server that exited with ``returncode``.

        Status 2 is an error the server explained in one ``error:`` line, which the
        console showed already: it is not repeated, with its log's last lines, here.
        """
        if returncode == EXIT_USER_ERROR and "error: " in "\n".join(read_lines(self.logs / "server.log")[-5:]):
            return AlreadySaid()
        return UserError(self._failure("server", returncode))

    def _failure(self, name: str, returncode: int) -> str:
        log_path = self.logs / f"{name}.log"
        last = [line for line in read_lines(log_path) if not is_start_up_noise(line)][-5:]
        detail = "\n  ".join(last) if last else "(no output)"
        why = ""
        if name in self.services and name.startswith("client_") and refused_supernode(log_path):
            why = (
                " (the SuperLink refused this SuperNode: its public key is not registered; "
                "flwr supernode register KEY.pub, docs/runtimes.md: A client on another machine)"
            )
        return f"{name} exited with status {returncode}{why}; last lines of {log_path}:\n  {detail}"


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
