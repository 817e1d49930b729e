"""How many Ray workers a simulation runs: one per core but one by default, every worker fitting Ray's count."""

from __future__ import annotations

import math

import pytest

from fedmnist.runtimes.simulation import RAY_STEPS_PER_CPU, cpus_per_client, simulation_workers
from fedmnist.settings.server_settings import ServerSettings


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 7, 8, 12, 16, 64])
def test_by_default_a_local_simulation_leaves_one_core_to_the_server(
    cores: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    per_client = cpus_per_client(ServerSettings(runtime="simulation"))
    workers = max(1, cores - 1)
    assert simulation_workers(None) == workers
    # Flower sizes its worker pool as int(CPUs / per_client); Ray must then fit every worker,
    # in its own units (1/10,000 of a CPU): 8/7 rounded up would leave the seventh unplaced.
    assert int(cores / per_client) == workers
    assert workers * math.ceil(per_client * RAY_STEPS_PER_CPU) <= cores * RAY_STEPS_PER_CPU


def test_a_chosen_share_and_a_cluster_are_taken_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert cpus_per_client(ServerSettings(runtime="simulation", sim_cpus_per_client=0.5)) == 0.5
    assert simulation_workers(0.5) == 4
    assert cpus_per_client(ServerSettings(runtime="simulation", ray_address="10.0.0.5:6379")) == 1.0
