"""Checkpoints: what they hold, the checks before a resume, and round renumbering."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC
from pathlib import Path

import numpy as np
import pytest
from flwr.common import parameters_to_ndarrays
from flwr.server.strategy import FedAdam, FedAvgM

from fedmnist.common.errors import UserError
from fedmnist.results.checkpoint import (
    Checkpoint,
    load_checkpoint,
    restore_strategy_state,
    save_checkpoint,
    strategy_state,
)
from fedmnist.server.strategies import build_strategy
from fedmnist.settings.server_settings import ServerSettings

WEIGHTS = [np.ones((2, 2), np.float32), np.zeros(2, np.float32)]


def checkpoint_of(settings: ServerSettings, round_done: int = 2) -> Checkpoint:
    return Checkpoint(
        round=round_done,
        weights=WEIGHTS,
        strategy_state={},
        records=[{"round": 1}, {"round": 2}],
        initial=None,
        config=asdict(settings),
        data_source="mnist-5k",
    )


def test_a_run_is_named_after_its_settings_and_start_unless_named() -> None:
    from datetime import datetime

    started = datetime(2026, 11, 29, 13, 55, tzinfo=UTC)
    settings = ServerSettings(strategy="fedprox", partition="dirichlet:0.1", clients=5, rounds=40)
    assert settings.default_name(started) == "fedprox-dirichlet0.1-5c-40r-20261129-1355"


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    settings = ServerSettings(rounds=4)
    save_checkpoint(tmp_path / "c.pkl", checkpoint_of(settings))
    loaded = load_checkpoint(tmp_path / "c.pkl", asdict(settings))
    assert loaded.round == 2 and loaded.records == [{"round": 1}, {"round": 2}]
    assert all(np.array_equal(a, b) for a, b in zip(loaded.weights, WEIGHTS))


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.pkl", checkpoint_of(ServerSettings(rounds=4, model="mlp")))
    now = asdict(ServerSettings(rounds=4, model="cnn", partition="shards:2"))
    with pytest.raises(
        UserError, match="different run: partition 'iid' there, 'shards:2' now; model 'mlp' there, 'cnn' now"
    ):
        load_checkpoint(tmp_path / "c.pkl", now)


def test_resume_without_checkpoint_or_after_the_end_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nothing to resume"):
        load_checkpoint(tmp_path / "missing.pkl", asdict(ServerSettings()))
    save_checkpoint(tmp_path / "c.pkl", checkpoint_of(ServerSettings(rounds=2), round_done=2))
    with pytest.raises(UserError, match="already finished all 2 rounds"):
        load_checkpoint(tmp_path / "c.pkl", asdict(ServerSettings(rounds=2)))
    (tmp_path / "bad.pkl").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "bad.pkl", asdict(ServerSettings()))


def test_checkpoint_file_holds_only_arrays_and_json_and_a_pickle_is_never_loaded(tmp_path: Path) -> None:
    import os
    import pickle
    import zipfile

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "checkpoints" / "checkpoint_4.npz"
    save_checkpoint(path, checkpoint_of(ServerSettings(rounds=4)))
    assert all(name.endswith(".npy") for name in zipfile.ZipFile(path).namelist())
    path.write_bytes(pickle.dumps(Payload()))  # A crafted file where the checkpoint was.
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_checkpoint(path, asdict(ServerSettings(rounds=4)))
    legacy = path.with_suffix(".pkl")
    path.rename(legacy)  # An older version's pickle: refused with a reason, not loaded.
    with pytest.raises(UserError, match="does not load"):
        load_checkpoint(path, asdict(ServerSettings(rounds=4)))
    assert not marker.exists()


def test_strategy_state_round_trips_through_the_file(tmp_path: Path) -> None:
    strategy = build_strategy(ServerSettings(strategy="fedavgm", clients=2, min_clients=2), WEIGHTS)
    assert isinstance(strategy, FedAvgM)
    strategy.momentum_vector = [np.full((2, 2), 0.5, np.float32), np.full(2, 0.25, np.float32)]
    checkpoint = checkpoint_of(ServerSettings(rounds=4))
    checkpoint.strategy_state = strategy_state(strategy)
    save_checkpoint(tmp_path / "c.npz", checkpoint)
    state = load_checkpoint(tmp_path / "c.npz", asdict(ServerSettings(rounds=4))).strategy_state
    assert state["server_momentum"] == 0.9 and np.array_equal(state["momentum_vector"][1], np.full(2, 0.25))
    assert np.array_equal(parameters_to_ndarrays(state["initial_parameters"])[0], WEIGHTS[0])


def test_fedadam_state_survives_a_restart() -> None:
    before = build_strategy(ServerSettings(strategy="fedadam", clients=2, min_clients=2), WEIGHTS)
    assert isinstance(before, FedAdam)
    before.m_t = [np.full((2, 2), 0.5, np.float32), np.full(2, 0.25, np.float32)]  # As after some rounds.
    state = strategy_state(before)
    assert "m_t" in state and "evaluate_fn" not in state  # Data, not callbacks.

    def evaluate_fn(server_round, weights, config):
        return 0.0, {}

    after = build_strategy(
        ServerSettings(strategy="fedadam", clients=2, min_clients=2), WEIGHTS, evaluate_fn=evaluate_fn
    )
    restore_strategy_state(after, state)
    assert isinstance(after, FedAdam) and after.m_t is not None and np.array_equal(after.m_t[0], before.m_t[0])
    assert after.evaluate_fn is evaluate_fn  # The resuming server's callbacks stay.
