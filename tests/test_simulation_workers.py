"""How many Ray workers a simulation runs: one per core but one by default, every worker fitting Ray's count."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import PROJECT_ROOT
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


@pytest.mark.slow
def test_a_local_simulations_ray_runs_without_the_autoscaler_monitor() -> None:
    """Its shutdown then takes 0.15-0.35 s instead of 1.35 s (fedmnist.runtimes.simulation._stop_autoscaler_monitor)."""
    code = (
        "import ray; from ray._private import worker; "
        "from fedmnist.runtimes.simulation import SimulationFederation; "
        "from fedmnist.settings.server_settings import ServerSettings; "
        "SimulationFederation(ServerSettings(runtime='simulation'))._start_ray(); "
        "print(' '.join(sorted(worker._global_node.all_processes))); ray.shutdown()"
    )
    ray_folder = tempfile.mkdtemp(prefix="fmray")  # Short: Ray's socket paths must fit 107 bytes.
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=PROJECT_ROOT,
            env={**os.environ, "RAY_TMPDIR": ray_folder},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(ray_folder, ignore_errors=True)
    processes = done.stdout.split()
    assert done.returncode == 0 and "raylet" in processes, done.stderr[-2000:]
    assert "monitor" not in processes


def test_flowers_simulation_queues_wait_at_most_a_twentieth_of_a_second_and_still_deliver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After _flower_simulation, Flower's simulation threads see their stop within 0.05 s, not 1 s."""
    import queue

    from flwr.server.superlink.fleet.vce import vce_api

    from fedmnist.runtimes.simulation import QUEUE_WAIT_SECONDS, PromptQueue, _flower_simulation

    _flower_simulation()
    assert vce_api.Queue is PromptQueue
    waits: list[float | None] = []
    real_get = queue.Queue.get

    def noted_get(self: queue.Queue, block: bool = True, timeout: float | None = None) -> object:
        waits.append(timeout)
        return real_get(self, block, 0)

    monkeypatch.setattr(queue.Queue, "get", noted_get)
    with pytest.raises(queue.Empty):
        PromptQueue().get(timeout=1.0)  # As Flower's worker and injector threads ask.
    waiting = PromptQueue()
    waiting.put("message")
    assert waiting.get() == "message"  # Without a timeout, it waits as long as it takes.
    assert waits == [QUEUE_WAIT_SECONDS, None]
