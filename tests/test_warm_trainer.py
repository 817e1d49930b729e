"""The Deployment Runtime's warm trainers: real trainer processes on Unix sockets, real Keras training on the 5k rows."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, RecordDict

from fedmnist.client.faults import InjectedDrop
from fedmnist.client.flower_client import OPTIMIZER_STATE, ClientCache, PartitionClient, SettingsMismatch
from fedmnist.client.warm_trainer import RemotePartitionClient, socket_folder
from fedmnist.data.sources import DATA_HOME_VARIABLE
from fedmnist.runtimes.deployment import trainer_pids
from fedmnist.settings.client_config import config_for_clients
from fedmnist.settings.server_settings import ServerSettings

# Each trainer imports TensorFlow in a process of its own (3-5 s here). One xdist worker runs the module:
# its trainers all watch the pytest process every worker shares, and the tests count them.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("warm_trainers")]

NODE = 42
CONFIG = config_for_clients(ServerSettings(clients=3, model="dense32", keep_optimizer=True), "mnist-5k", run_id="r")


@pytest.fixture(scope="module")
def sockets(tmp_path_factory: pytest.TempPathFactory, data_home: str) -> Iterator[Path]:
    """A temporary folder of its own for the trainers' sockets; the trainers see the test's data home."""
    with pytest.MonkeyPatch.context() as patch:
        # Short: a Unix socket's path has at most 107 bytes.
        patch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("t")))
        patch.setenv(DATA_HOME_VARIABLE, data_home)
        folder = socket_folder()
        yield folder
        for pid in trainers_serving(folder):
            os.kill(pid, 9)


def trainers_serving(folder: Path) -> list[int]:
    """The trainers with a socket in ``folder``: this module's (another xdist worker's trainers watch the same pid)."""
    return [pid for pid in trainer_pids([os.getppid()]) if str(folder) in Path(f"/proc/{pid}/cmdline").read_text()]


def test_a_remote_client_trains_as_a_local_one_and_its_state_stays_in_flowers_context(
    sockets: Path, data_home: str
) -> None:
    """Bit for bit the same updates and metrics; Adam's state (--keep-optimizer) goes back to the node's context."""
    remote_state, local_state = RecordDict(), RecordDict()
    remote = RemotePartitionClient(1, NODE, 2, 3, remote_state, None)
    local = PartitionClient(2, 3, local_state, ClientCache(data_home))
    start = local.get_parameters(CONFIG(1))
    assert all(np.array_equal(a, b) for a, b in zip(remote.get_parameters(CONFIG(1)), start))
    weights = start
    for server_round in (1, 2):  # Round 2 starts from round 1's Adam state, which only the context carries.
        ours, count, metrics = remote.fit(weights, CONFIG(server_round))
        theirs, local_count, local_metrics = local.fit(weights, CONFIG(server_round))
        assert (
            all(np.array_equal(a, b) for a, b in zip(ours, theirs)) and count == local_count == 1200
        )  # 4,000 rows in 3 shares, 10% of each kept for validation.
        assert (metrics["accuracy"], metrics["loss"]) == (local_metrics["accuracy"], local_metrics["loss"])
        weights = ours
    kept, local_kept = remote_state[OPTIMIZER_STATE], local_state[OPTIMIZER_STATE]
    assert isinstance(kept, ArrayRecord) and isinstance(local_kept, ArrayRecord)
    assert all(np.array_equal(a, b) for a, b in zip(kept.to_numpy_ndarrays(), local_kept.to_numpy_ndarrays()))
    assert remote.evaluate(weights, CONFIG(2))[:2] == local.evaluate(weights, CONFIG(2))[:2]
    assert remote.get_properties({}) == {"partition_id": 2}
    assert [path.name for path in sockets.glob("*.sock")] == [f"1-{NODE}.sock"]
    assert len(trainers_serving(sockets)) == 1  # One trainer served all six calls.


def test_a_trainers_errors_reach_the_message_with_their_own_type(sockets: Path) -> None:
    """An injected drop-out stays an InjectedDrop (fault_mod answers it); a refused run stays a SettingsMismatch."""
    with pytest.raises(InjectedDrop, match="dropping out of round 1"):
        RemotePartitionClient(1, NODE, 2, 3, RecordDict(), "drop-at-round:1").fit([], CONFIG(1))
    with pytest.raises(SettingsMismatch, match="num-partitions 5 here, 3 on the server"):
        RemotePartitionClient(1, NODE, 2, 5, RecordDict(), None).evaluate([], CONFIG(1))


def test_a_nodes_next_run_ends_its_trainer_and_a_trainer_ends_with_the_process_it_watches(sockets: Path) -> None:
    first = trainer_pids([os.getppid()])
    RemotePartitionClient(2, NODE, 0, 3, RecordDict(), None).get_parameters(CONFIG(1))
    assert [path.name for path in sockets.glob("*.sock")] == [f"2-{NODE}.sock"]
    assert wait_until(lambda: not set(first) & set(trainer_pids([os.getppid()])))

    watched = subprocess.Popen(["sleep", "60"])
    trainer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedmnist.client.warm_trainer",
            "--socket",
            str(sockets / "w.sock"),
            "--watch-pid",
            str(watched.pid),
        ]
    )
    assert wait_until(lambda: (sockets / "w.sock").exists())
    watched.kill()
    watched.wait()
    assert trainer.wait(timeout=30) == 0 and not (sockets / "w.sock").exists()


def wait_until(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
