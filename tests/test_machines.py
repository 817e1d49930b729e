"""The federation across machines: each machine a network namespace with its own address (tests/machines.py).

The commands are the documented ones (docs/runtimes.md), run on the machine the docs name, each machine
in a folder of its own that holds the project as a clone would. The run-size flags (rounds, the 5k data
set, a short round timeout) are added to them; nothing else. Skipped where namespaces cannot be made.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT
from machines import Machine, Unavailable, Watched, copy, documented_commands, machines

pytestmark = pytest.mark.slow

RUNTIMES_PAGE = PROJECT_ROOT / "docs" / "runtimes.md"
DOCUMENTED_SERVER = "192.168.1.20"  # The server's address in the docs' commands.
# What a clone holds that the commands use (copied: Flower bundles no linked file), and its .venv (linked).
CLONE = ("run.sh", "server.py", "client.py", "scripts", "fedmnist", "pyproject.toml", "requirements.txt")
ROUNDS = 60
ROUND_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def network() -> Iterator[dict[str, Machine]]:
    try:
        with machines(["server", "client-0", "client-1"]) as made:
            yield made
    except Unavailable as reason:
        pytest.skip(f"no network namespaces here: {reason}")


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


@pytest.fixture(scope="module")
def classic_across_machines(
    network: dict[str, Machine], tmp_path_factory: pytest.TempPathFactory, data_home: str
) -> ClassicAcrossMachines:
    """Server and two clients on machines of their own, over TLS, as docs/runtimes.md says; then:

    client 1's cable is pulled after round 2 and plugged back once a round closed without it; once it
    trained again, the server is killed (kill -9) and started again with ``--resume`` while the
    clients wait. Every process's output is kept for the tests below.
    """
    root = tmp_path_factory.mktemp("classic")
    server_machine = network["server"]
    certs, server_command, *client_commands = documented("### With TLS", **{DOCUMENTED_SERVER: server_machine.address})
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
        client_desk = Desk(network[f"client-{partition}"], root / f"client-{partition}")
        copy(desk.folder / "certs" / "ca.pem", client_desk.folder / "ca.pem")  # Only that file, as the docs say.
        clients[partition] = client_desk.start(command, "--data-home", data_home)

    outputs = []
    try:
        cable = network["client-1"]
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


def rounds_of(run: ClassicAcrossMachines) -> list[dict]:
    return json.loads((run.folder / "history" / f"history_{ROUNDS}.json").read_text())["rounds"]


def test_the_documented_tls_pair_trains_across_machines(classic_across_machines: ClassicAcrossMachines) -> None:
    """docs/runtimes.md's commands, as written, on three machines: TLS with the CA made for the server's address."""
    run = classic_across_machines
    first = run.server_outputs[0]
    assert "Flower server on 0.0.0.0:8000 (TLS)" in first and "any client that reaches this port may join" in first
    assert all(client.process.returncode == 0 for client in run.clients.values())
    for output in [*run.server_outputs, *(c.output for c in run.clients.values())]:
        assert "Traceback" not in output, output
    rounds = rounds_of(run)
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))  # Every round once.
    first_rounds = rounds[: run.timed_out_round - 1]
    assert all(sorted(c["partition_id"] for c in r["per_client"] if "fit" in c) == [0, 1] for r in first_rounds)


def test_a_pulled_cable_costs_a_round_timeout_and_the_client_comes_back_by_itself(
    classic_across_machines: ClassicAcrossMachines,
) -> None:
    """The round in flight closes at --round-timeout without client 1, the run goes on with client 0, and
    client 1 (one line when lost, one when back, no traceback) trains again in later rounds."""
    run = classic_across_machines
    rounds = {r["round"]: r for r in rounds_of(run)}
    missed = rounds[run.timed_out_round]
    assert (missed["fit_results"], missed["fit_failures"]) == (1, 1)
    assert ROUND_TIMEOUT <= missed["seconds"] < ROUND_TIMEOUT + 2
    trained_by = {n: sorted(c["partition_id"] for c in r["per_client"] if "fit" in c) for n, r in rounds.items()}
    assert trained_by[run.timed_out_round] == [0]
    assert run.back_in_round > run.timed_out_round
    assert all(trained_by[n] == [0] for n in range(run.timed_out_round, run.back_in_round))  # Gone meanwhile.
    assert trained_by[run.back_in_round] == [0, 1]
    said = run.clients[1].output
    # Two outages for client 1: its cable, then the server's restart (the next test); one line each way.
    assert said.count("lost the Flower server") == 2 and said.count("back in touch") == 2, said


def test_a_killed_server_resumed_on_its_machine_finishes_with_the_clients_that_waited(
    classic_across_machines: ClassicAcrossMachines,
) -> None:
    """kill -9 on the server machine, then server.py --resume there: both clients reconnect by themselves
    and the run ends with every round once, the rounds after the kill trained by both."""
    run = classic_across_machines
    resumed = run.server_outputs[1]
    assert "resuming after round" in resumed
    headers = [
        json.loads(line)
        for line in (run.folder / "history" / f"history_{ROUNDS}.jsonl").read_text().splitlines()
        if '"config"' in line
    ]
    assert headers[0]["resumed_after_round"] == 0 and 1 <= headers[-1]["resumed_after_round"] <= run.killed_after
    rounds = rounds_of(run)
    after = rounds[headers[-1]["resumed_after_round"] :]
    assert all(sorted(c["partition_id"] for c in r["per_client"] if "fit" in c) == [0, 1] for r in after)
    said = run.clients[0].output
    assert said.count("lost the Flower server") == 1 and said.count("back in touch") == 1, said
    assert all(f"round {ROUNDS}/{ROUNDS}" not in output for output in run.server_outputs[:1])


DEPLOYMENT = "### The Deployment Runtime, with TLS and authenticated SuperNodes"


def test_the_documented_deployment_runtime_trains_across_machines_with_tls_and_registered_supernodes(
    network: dict[str, Machine], tmp_path: Path, data_home: str
) -> None:
    """docs/runtimes.md's SuperLink, SuperNodes and ``flwr run``, each on the machine the docs say: TLS with
    the CA made for the server's address, each SuperNode's public key registered before it connects."""
    server_machine = network["server"]
    steps = documented(DEPLOYMENT, **{DOCUMENTED_SERVER: server_machine.address})
    server_setup, certs, superlink_command, client_setup, keys, register, supernode_command, submit = steps
    assert "flower-superlink" in superlink_command and "flower-supernode" in supernode_command
    assert submit.startswith("flwr run .") and "rounds=40" in submit

    server = Desk(server_machine, tmp_path / "server", FEDMNIST_DATA_HOME=data_home)
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
            client = Desk(
                network[f"client-{partition}"], tmp_path / f"client-{partition}", FEDMNIST_DATA_HOME=data_home
            )
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
    assert "round 1/1" in said and "2/2 clients" in said and "Traceback" not in said, said
    # Both SuperNodes were let in from their own machines' addresses.
    for partition in (0, 1):
        address = network[f"client-{partition}"].address
        assert f"{address}:" in superlink.output and '/v1/fleet/activate-node HTTP/1.1" 200' in superlink.output
    (record,) = json.loads((server.folder / "history" / "history_1.json").read_text())["rounds"]
    assert sorted(c["partition_id"] for c in record["per_client"] if "fit" in c) == [0, 1]


RAY_CLUSTER = "### A simulation on a Ray cluster"


def test_a_simulation_on_a_two_node_ray_cluster_trains_on_both_and_leaves_the_cluster_running(
    network: dict[str, Machine], tmp_path: Path, data_home: str
) -> None:
    """docs/runtimes.md's Ray cluster: the head on one machine, a node on another (one CPU each), then the
    simulation against it. Its virtual clients train on both nodes, its outputs are a run's usual ones, and
    the cluster is left as it was: both nodes up, nothing running. (The docs' closing ``ray stop`` is not
    run: on one machine it would stop every Ray here; the test ends its nodes' own processes instead.)"""
    head_machine, other_machine = network["server"], network["client-0"]
    start_head, join, simulate, stop = documented(
        RAY_CLUSTER, **{DOCUMENTED_SERVER: head_machine.address, "192.168.1.21": other_machine.address}
    )
    assert "ray start --head" in start_head and "ray start --address" in join and stop == ".venv/bin/ray stop"
    head, other = Desk(head_machine, tmp_path / "head"), Desk(other_machine, tmp_path / "other")
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
        # Left as found: both nodes up, none of their CPUs taken once Ray's status catches up (seconds).
        deadline = time.monotonic() + 30
        while "0.0/2.0 CPU" not in (status := head.run(f".venv/bin/ray status --address {head_machine.address}:6379")):
            assert time.monotonic() < deadline, f"the run's workers still hold the cluster's CPUs:\n{status}"
            time.sleep(1)
        assert all(process.process.poll() is None for process in cluster), "the run stopped the cluster"
    finally:
        for process in reversed(cluster):
            process.process.terminate()
        for process in cluster:
            process.finish(timeout=60)
        shutil.rmtree(files, ignore_errors=True)

    summary = json.loads((head.folder / "history" / "history_3.json").read_text())
    assert [r["fit_results"] for r in summary["rounds"]] == [40, 40, 40]
    fits = {address: 0 for address in (head_machine.address, other_machine.address)}
    for record in summary["rounds"]:
        for client in record["per_client"]:
            fits[client["node"]] += "fit" in client
    assert all(count > 0 for count in fits.values()), fits
    assert (
        f"virtual clients trained on 2 Ray nodes: {head_machine.address} ({fits[head_machine.address]} fits), "
        f"{other_machine.address} ({fits[other_machine.address]} fits)" in said
    )
    assert (head.folder / "models" / "global_3.keras").exists() and (head.folder / "plots" / "accuracy.png").exists()
    assert status.count(" node_") == 2, status
