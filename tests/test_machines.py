"""The federation across machines (tests/across_machines.py runs the scenarios; these tests read what they kept).

Skipped, with one line, where network namespaces cannot be made.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import pytest

import across_machines
from across_machines import (
    MACHINES,
    ROUND_TIMEOUT,
    ROUNDS,
    ClassicAcrossMachines,
    DeploymentAcrossMachines,
    RayClusterRun,
)
from machines import Machine, Unavailable, machines

pytestmark = pytest.mark.slow

Kept = TypeVar("Kept")


class Scenarios:
    """The machines the scenarios share, one scenario at a time, and the folders they write in."""

    def __init__(self, made: Mapping[str, Machine], data_home: str, folders: pytest.TempPathFactory) -> None:
        self.made, self.data_home, self.folders = made, data_home, folders

    def run(self, scenario: Callable[[Mapping[str, Machine], Path, str], Kept]) -> Kept:
        """What ``scenario`` kept, run in a folder of its own."""
        return scenario(self.made, self.folders.mktemp(scenario.__name__), self.data_home)


@pytest.fixture(scope="module")
def shared_machines(tmp_path_factory: pytest.TempPathFactory, data_home: str) -> Iterator[Scenarios]:
    """The machines, removed once this module's tests are done (conftest groups every test that reads them
    on one xdist worker); the tests skip with one line where they cannot be made."""
    own_data = tmp_path_factory.mktemp("data_home_machines")  # tests/across_machines.py says why.
    shutil.copytree(data_home, own_data, dirs_exist_ok=True)
    try:
        with machines(MACHINES) as made:
            yield Scenarios(made, str(own_data), tmp_path_factory)
    except Unavailable as reason:
        pytest.skip(f"no network namespaces here: {reason}")


@pytest.fixture(scope="module")
def classic_across_machines(shared_machines: Scenarios) -> ClassicAcrossMachines:
    """Server and two clients on machines of their own, over TLS, as docs/runtimes.md says; then client 1's
    cable is pulled after round 2 and plugged back once a round closed without it; once it trained again,
    the server is killed (kill -9) and started again with ``--resume`` while the clients wait."""
    return shared_machines.run(across_machines.classic_across_machines)


def rounds_of(run: ClassicAcrossMachines) -> list[dict]:
    return json.loads((run.folder / "history" / f"history_{ROUNDS}.json").read_text())["rounds"]


def trained_by(record: dict) -> list[int]:
    return sorted(c["partition_id"] for c in record["per_client"] if "fit" in c)


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
    assert all(trained_by(r) == [0, 1] for r in rounds[: run.timed_out_round - 1])


def test_a_pulled_cable_costs_a_round_timeout_and_the_client_comes_back_by_itself(
    classic_across_machines: ClassicAcrossMachines,
) -> None:
    """The round in flight closes at --round-timeout without client 1, the run goes on with client 0, and
    client 1 (one line when lost, one when back, no traceback) trains again in later rounds."""
    run = classic_across_machines
    rounds = {r["round"]: r for r in rounds_of(run)}
    missed = rounds[run.timed_out_round]
    assert (missed["fit_results"], missed["fit_failures"]) == (1, 1)
    assert "cut off at --round-timeout" in missed["failure_reasons"][0]
    assert ROUND_TIMEOUT <= missed["seconds"] < ROUND_TIMEOUT + 5  # Closed at the timeout, not later.
    assert run.timed_out_round < run.back_in_round
    assert all(trained_by(rounds[n]) == [0] for n in range(run.timed_out_round, run.back_in_round))  # Gone meanwhile.
    assert trained_by(rounds[run.back_in_round]) == [0, 1]
    said = run.clients[1].output
    # Two outages for client 1: its cable, then the server's restart (the next test); one line each way.
    assert said.count("lost the Flower server") == 2 and said.count("back in touch") == 2, said


def test_a_killed_server_resumed_on_its_machine_finishes_with_the_clients_that_waited(
    classic_across_machines: ClassicAcrossMachines,
) -> None:
    """kill -9 on the server machine, then server.py --resume there: both clients reconnect by themselves
    and the run ends with every round once, the rounds after the kill trained by both."""
    run = classic_across_machines
    assert "resuming after round" in run.server_outputs[1]
    headers = [
        json.loads(line)
        for line in (run.folder / "history" / f"history_{ROUNDS}.jsonl").read_text().splitlines()
        if '"config"' in line
    ]
    resumed_after = headers[-1]["resumed_after_round"]
    assert headers[0]["resumed_after_round"] == 0 and 1 <= resumed_after <= run.killed_after < ROUNDS
    assert all(trained_by(r) == [0, 1] for r in rounds_of(run)[resumed_after:])
    said = run.clients[0].output
    assert said.count("lost the Flower server") == 1 and said.count("back in touch") == 1, said


def test_the_documented_deployment_runtime_trains_across_machines_with_tls_and_registered_supernodes(
    shared_machines: Scenarios,
) -> None:
    """docs/runtimes.md's SuperLink, SuperNodes and ``flwr run``, each on the machine the docs say: TLS with
    the CA made for the server's address, each SuperNode's public key registered before it connects."""
    run: DeploymentAcrossMachines = shared_machines.run(across_machines.deployment_across_machines)
    assert "round 1/1" in run.said and "2/2 clients" in run.said and "Traceback" not in run.said, run.said
    # Both SuperNodes were let in, from their own machines' addresses.
    activations = [line for line in run.superlink.splitlines() if '/v1/fleet/activate-node HTTP/1.1" 200' in line]
    assert sorted(line.split(" - ")[0].rsplit(" ", 1)[-1].split(":")[0] for line in activations) == run.addresses
    (record,) = json.loads((run.folder / "history" / "history_1.json").read_text())["rounds"]
    assert trained_by(record) == [0, 1]


def test_a_simulation_on_a_two_node_ray_cluster_trains_on_both_and_leaves_the_cluster_running(
    shared_machines: Scenarios,
) -> None:
    """docs/runtimes.md's Ray cluster, one CPU a node: the virtual clients train on both nodes, the run writes
    its usual outputs, and the cluster is left as it was: both nodes up, nothing of the run's left on them."""
    run: RayClusterRun = shared_machines.run(across_machines.ray_cluster_across_machines)
    summary = json.loads((run.folder / "history" / "history_3.json").read_text())
    assert [r["fit_results"] for r in summary["rounds"]] == [40, 40, 40]
    fits = dict.fromkeys(run.nodes, 0)
    for record in summary["rounds"]:
        for client in record["per_client"]:
            fits[client["node"]] += "fit" in client
    assert all(count > 0 for count in fits.values()), fits
    head, other = run.nodes
    assert (
        f"virtual clients trained on 2 Ray nodes: {head} ({fits[head]} fits), {other} ({fits[other]} fits)" in run.said
    )
    assert (run.folder / "models" / "global_3.keras").exists() and (run.folder / "plots" / "accuracy.png").exists()
    assert run.running_after, "the run stopped the cluster"
    assert run.status.count(" node_") == 2 and "0.0/2.0 CPU" in run.status, run.status
