"""The federation across machines, as docs/runtimes.md tells a user to run it: each scenario once a session.

Each machine is a network namespace with its own address (tests/machines.py), with a folder that holds
the project as a clone would. The commands are the documented ones, run on the machine the docs name;
the run-size flags (rounds, the 5k data set, a short round timeout) are added, nothing else. The
scenarios mostly wait (for a round timeout, a SuperNode's poll, Ray's start), while the other xdist
workers run other tests; tests/test_machines.py asserts on what they kept. They use a copy of the data
folder of their own, so that the other tests' checks for left-over processes (by that folder's path)
never count theirs (the Ray cluster stays up until the machines are removed).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from machines import Machine, Watched, copy, documented_commands

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUNTIMES_PAGE = PROJECT_ROOT / "docs" / "runtimes.md"
DOCUMENTED_SERVER = "192.168.1.20"  # The server's address in the docs' commands.
DOCUMENTED_OTHER = "192.168.1.21"  # The Ray section's second machine.
# What a clone holds that the commands use (copied: Flower bundles no linked file), and its .venv (linked).
CLONE = ("run.sh", "server.py", "client.py", "scripts", "fedmnist", "pyproject.toml", "requirements.txt")
ROUNDS = 60
ROUND_TIMEOUT = 5.0  # Long enough that no client of the scenario, beside the other workers' tests, misses it by chance.
TLS_PAIR = "### With TLS"
DEPLOYMENT = "### The Deployment Runtime, with TLS and authenticated SuperNodes"
RAY_CLUSTER = "### A simulation on a Ray cluster"


# The machines every scenario runs on, made once for all of them (tests/test_machines.py).
MACHINES = ("server", "client-0", "client-1")


class Desk:
    """A machine as its user sits at it: a clone of the project in ``folder``, a fresh shell's environment.

    The shell's PATH has no virtual environment in it until a documented ``source .venv/bin/activate``;
    ``folder`` is also the user's home (``~/.flwr``, scikit-learn's data cache): nothing is shared
    with the other machines but what the test copies over.
    """

    def __init__(self, machine: Machine, folder: Path, **environment: str) -> None:
        self.machine, self.folder = machine, folder
        folder.mkdir(parents=True)
        (folder / ".venv").symlink_to(PROJECT_ROOT / ".venv")
        for name in CLONE:
            source = PROJECT_ROOT / name
            if source.is_dir():
                shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, folder / name)
        path = [entry for entry in os.environ["PATH"].split(os.pathsep) if not entry.startswith(str(PROJECT_ROOT))]
        shell = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        self.environment = {**shell, "PATH": os.pathsep.join(path), "HOME": str(folder), **environment}
        self.activated = False

    def command(self, documented: str, *extra: str) -> list[str]:
        """A documented command line (with ``extra`` arguments) as bash runs it on this machine."""
        line = " ".join([documented, *map(shlex.quote, extra)])
        if self.activated:
            line = f"source .venv/bin/activate && {line}"
        if "source .venv/bin/activate" in documented:
            self.activated = True  # For the commands after it, as in the user's shell.
        return self.machine.command(["bash", "-c", line])

    def start(self, documented: str, *extra: str) -> Watched:
        return Watched(self.command(documented, *extra), cwd=self.folder, env=self.environment)

    def run(self, documented: str, *extra: str, timeout: float = 120) -> str:
        """Run a command to its end; fail the test with its output unless it succeeds. Its output."""
        done = self.start(documented, *extra)
        assert done.finish(timeout=timeout) == 0, done.output
        return done.output


def documented(heading: str, **addresses: str) -> list[str]:
    """The commands of ``heading``'s block in docs/runtimes.md, the docs' addresses replaced by the machines'."""
    commands = []
    for command in documented_commands(RUNTIMES_PAGE, heading):
        for written, address in addresses.items():
            command = command.replace(written, address)
        commands.append(command)
    return commands


@dataclass
class ClassicAcrossMachines:
    """The TLS pair of the docs across three machines, through a pulled cable and a killed server."""

    folder: Path  # The server machine's: the run's history/ and models/.
    server_outputs: list[str]  # The first server's, then the resumed one's.
    clients: dict[int, Watched]
    timed_out_round: int  # The round the unplugged client missed.
    back_in_round: int  # The first round it trained in after the cable was back.
    killed_after: int  # The round the server had said last before kill -9.


def classic_across_machines(machines: Mapping[str, Machine], root: Path, data_home: str) -> ClassicAcrossMachines:
    """Server and two clients on machines of their own, over TLS, as docs/runtimes.md says; then:

    client 1's cable is pulled after round 2 and plugged back once a round closed without it; once it
    trained again, the server is killed (kill -9) and started again with ``--resume`` while the
    clients wait. Every process's output is kept for the tests below.
    """
    server_machine = machines["server"]
    certs, server_command, *client_commands = documented(TLS_PAIR, **{DOCUMENTED_SERVER: server_machine.address})
    assert certs.startswith("./run.sh certs") and "server.py" in server_command
    assert len(client_commands) == 2 and all("client.py" in c for c in client_commands)

    desk = Desk(server_machine, root / "server")
    desk.run(certs)
    run_size = ["--rounds", str(ROUNDS), "--round-timeout", str(ROUND_TIMEOUT), "--dataset", "mnist-5k"]
    run_size += ["--data-home", data_home]
    server = desk.start(server_command, *run_size)
    clients: dict[int, Watched] = {}
    for partition, command in enumerate(client_commands):
        assert f"--partition-id {partition}" in command
        client_desk = Desk(machines[f"client-{partition}"], root / f"client-{partition}")
        copy(desk.folder / "certs" / "ca.pem", client_desk.folder / "ca.pem")  # Only that file, as the docs say.
        clients[partition] = client_desk.start(command, "--data-home", data_home)

    outputs = []
    try:
        cable = machines["client-1"]
        server.wait_for(f"round 2/{ROUNDS}")
        cable.pull_cable()
        missed = server.wait_for("| 1/2 clients", timeout=ROUND_TIMEOUT + 60)
        cable.plug_cable()
        timed_out_round = int(server.lines[missed].split("round ", 1)[1].split("/", 1)[0])
        back = clients[1].wait_for("back in touch", timeout=60)
        trained = clients[1].lines[clients[1].wait_for(": trained on", after=back, timeout=60)]
        back_in_round = int(trained.split("round ", 1)[1].split(":", 1)[0])

        said = [line for line in server.lines if f"/{ROUNDS} |" in line]
        os.kill(server.process.pid, signal.SIGKILL)  # ip netns exec and bash -c exec the command itself.
        server.finish(timeout=30)
        outputs.append(server.output)
        killed_after = int(said[-1].split("round ", 1)[1].split("/", 1)[0])
        assert killed_after < ROUNDS, "the run ended before the server could be killed: make ROUNDS larger"

        time.sleep(1)  # The clients notice, and wait.
        resumed = desk.start(server_command, *run_size, "--resume")
        assert resumed.finish(timeout=240) == 0, resumed.output
        outputs.append(resumed.output)
        for client in clients.values():
            client.finish(timeout=60)
    finally:
        for process in [server, *clients.values()]:
            if process.process.poll() is None:
                process.process.kill()
    return ClassicAcrossMachines(desk.folder, outputs, clients, timed_out_round, back_in_round, killed_after)


@dataclass
class DeploymentAcrossMachines:
    """The docs' SuperLink and two SuperNodes on machines of their own, and the ``flwr run`` of one round."""

    folder: Path  # The server machine's: the run's history/.
    superlink: str  # The SuperLink's output: its access log names each SuperNode's address.
    said: str  # flwr run's output: the ServerApp's lines.
    addresses: list[str]  # The client machines'.


def deployment_across_machines(machines: Mapping[str, Machine], root: Path, data_home: str) -> DeploymentAcrossMachines:
    """docs/runtimes.md's SuperLink, SuperNodes and ``flwr run``, each on the machine the docs say: TLS with
    the CA made for the server's address, each SuperNode's public key registered before it connects."""
    server_machine = machines["server"]
    steps = documented(DEPLOYMENT, **{DOCUMENTED_SERVER: server_machine.address})
    server_setup, certs, superlink_command, client_setup, keys, register, supernode_command, submit = steps
    assert "flower-superlink" in superlink_command and "flower-supernode" in supernode_command
    assert submit.startswith("flwr run .") and "rounds=40" in submit

    server = Desk(server_machine, root / "server", FEDMNIST_DATA_HOME=data_home)
    server.run(server_setup)
    server.run(certs)
    started: list[Watched] = []
    try:
        superlink = server.start(superlink_command)
        started.append(superlink)
        superlink.wait_for("Uvicorn running on https://0.0.0.0:9093")  # TLS, on every interface.
        # ~/.flwr/config.toml as the docs' comment describes it, the CA by its absolute path.
        (server.folder / ".flwr").mkdir(exist_ok=True)  # The SuperLink may have made it.
        (server.folder / ".flwr" / "config.toml").write_text(
            f'[superlink]\ndefault = "fedmnist"\n[superlink.fedmnist]\naddress = "{server_machine.address}:9093"\n'
            f'root-certificates = "{server.folder / "certs" / "ca.pem"}"\n'
        )
        for partition in (0, 1):
            client = Desk(machines[f"client-{partition}"], root / f"client-{partition}", FEDMNIST_DATA_HOME=data_home)
            client.run(client_setup)
            client.run(keys)
            copy(client.folder / "keys" / "supernode_0.pub", server.folder / f"client-{partition}.pub")
            copy(server.folder / "certs" / "ca.pem", client.folder / "ca.pem")
            assert "registered successfully" in server.run(register.replace("client-0", f"client-{partition}"))
            started.append(client.start(supernode_command.replace("partition-id=0", f"partition-id={partition}")))

        # The data set and its offline copy added to the documented settings, and one round instead of 40.
        run_config = f"rounds=1 dataset='mnist-5k' data-home='{data_home}'"
        said = server.run(submit.replace("rounds=40", run_config), timeout=300)
    finally:
        for process in started:
            process.process.terminate()
        for process in started:
            process.finish(timeout=30)
    addresses = [machines[f"client-{partition}"].address for partition in (0, 1)]
    return DeploymentAcrossMachines(server.folder, superlink.output, said, addresses)


@dataclass
class RayClusterRun:
    """The docs' simulation on a two-node Ray cluster, and the cluster's status after it."""

    folder: Path  # The head machine's: the run's history/, models/ and plots/.
    said: str  # The run's output.
    status: str  # ``ray status`` once the run had ended.
    nodes: list[str]  # The head's address, then the other node's.
    running_after: bool  # Both nodes' processes still running once the run had ended.


def ray_cluster_across_machines(machines: Mapping[str, Machine], root: Path, data_home: str) -> RayClusterRun:
    """docs/runtimes.md's Ray cluster: the head on one machine, a node on another (one CPU each), then the
    simulation against it. The docs' closing ``ray stop`` is not run: on one machine it would stop every
    Ray here; the scenario ends its nodes' own processes instead."""
    head_machine, other_machine = machines["server"], machines["client-0"]
    start_head, join, simulate, stop = documented(
        RAY_CLUSTER, **{DOCUMENTED_SERVER: head_machine.address, DOCUMENTED_OTHER: other_machine.address}
    )
    assert "ray start --head" in start_head and "ray start --address" in join and stop == ".venv/bin/ray stop"
    head, other = Desk(head_machine, root / "head"), Desk(other_machine, root / "other")
    # Small nodes that stay in the foreground (their processes end with them), their files apart from
    # other Rays' /tmp/ray, in short paths (a Unix socket's path has at most 107 bytes).
    node = ["--num-cpus", "1", "--object-store-memory", str(100 * 2**20), "--disable-usage-stats", "--block"]
    files = Path(tempfile.mkdtemp(prefix="fmray"))
    cluster = [head.start(start_head, "--include-dashboard", "false", "--temp-dir", str(files / "head"), *node)]
    try:
        cluster[0].wait_for("Ray runtime started", timeout=120)
        cluster.append(other.start(join, "--temp-dir", str(files / "other"), *node))
        cluster[1].wait_for("Ray runtime started", timeout=120)
        said = head.run(simulate, "--dataset", "mnist-5k", "--data-home", data_home, "--no-dashboard", timeout=300)
        # Both nodes up, none of their CPUs taken once Ray's status catches up (seconds).
        deadline = time.monotonic() + 60
        while "0.0/2.0 CPU" not in (status := head.run(f".venv/bin/ray status --address {head_machine.address}:6379")):
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        running_after = all(process.process.poll() is None for process in cluster)
    finally:
        for process in reversed(cluster):
            process.process.terminate()
        for process in cluster:
            process.finish(timeout=60)
        shutil.rmtree(files, ignore_errors=True)
    return RayClusterRun(head.folder, said, status, [head_machine.address, other_machine.address], running_after)
