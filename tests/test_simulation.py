"""Flower's Simulation Runtime (--runtime simulation): virtual clients on Ray, the same server and outputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import PROJECT_ROOT, free_port, run_script
from fedmnist.data import MnistData
from fedmnist.simulation import WorkerCache

pytest.importorskip("ray")


def result_files(out: Path) -> set[str]:
    """The run's outputs, by path relative to ``out``; TensorBoard's event files by folder (their names hold a time)."""
    return {str((path.parent if "tensorboard" in path.parts else path).relative_to(out))
            for path in out.rglob("*") if path.is_file() and "logs" not in path.parts}


def simulate(out: Path, data_home: str, *args: str, timeout: float = 300) -> dict:
    done = run_script("server.py", "--runtime", "simulation", "--dataset", "mnist-5k", "--data-home", data_home,
                      "--out", str(out), *args, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return json.loads(next((out / "history").glob("history_*.json")).read_text())


def test_a_simulated_run_writes_what_a_classic_run_writes(tmp_path: Path, data_home: str) -> None:
    common = ("--clients", "3", "--rounds", "2", "--dataset", "mnist-5k", "--data-home", data_home)
    classic = subprocess.run(["bash", str(PROJECT_ROOT / "run.sh"), *common, "--no-dashboard", "--port", str(free_port()),
                              "--out", str(tmp_path / "classic")], capture_output=True, text=True, timeout=300,
                             stdin=subprocess.DEVNULL)
    assert classic.returncode == 0, classic.stdout[-2000:] + classic.stderr[-2000:]
    summary = simulate(tmp_path / "simulation", data_home, *common[:4])
    rounds = summary["rounds"]
    assert [(r["round"], r["fit_results"], r["evaluate_results"]) for r in rounds] == [(1, 3, 3), (2, 3, 3)]
    assert sorted(c["partition_id"] for c in rounds[-1]["per_client"]) == [0, 1, 2]
    classic_rounds = json.loads((tmp_path / "classic" / "history" / "history_2.json").read_text())["rounds"]
    # Comparable accuracy: the same data and model; only Adam's state between rounds differs.
    assert abs(rounds[-1]["centralized"]["accuracy"] - classic_rounds[-1]["centralized"]["accuracy"]) < 0.05
    assert summary["config"]["runtime"] == "simulation"
    assert result_files(tmp_path / "simulation") == result_files(tmp_path / "classic")


def test_a_hundred_virtual_clients_with_a_tenth_sampled_each_round(tmp_path: Path, data_home: str) -> None:
    summary = simulate(tmp_path, data_home, "--clients", "100", "--rounds", "2", "--fraction-fit", "0.1",
                       "--fraction-evaluate", "0.1")
    rounds = summary["rounds"]
    assert [(r["fit_results"], r["evaluate_results"], r["connected_clients"]) for r in rounds] == [(10, 10, 100)] * 2
    trained = [c["partition_id"] for c in rounds[0]["per_client"] if "fit" in c]
    evaluated = [c["partition_id"] for c in rounds[0]["per_client"] if "evaluate" in c]
    assert len(set(trained)) == len(set(evaluated)) == 10 and all(0 <= p < 100 for p in trained + evaluated)
    assert rounds[-1]["centralized"]["accuracy"] > rounds[0]["centralized"]["accuracy"] - 0.05


def test_a_worker_keeps_one_trainer_and_each_clients_rows(mnist_5k: MnistData, data_home: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMNIST_DATA_HOME", data_home)
    cache = WorkerCache()
    config = {"dataset": "mnist-5k", "seed": 1, "partition": "iid", "model": "dense32"}
    trainer = cache.trainer("dense32", 3)
    x, y = mnist_5k.x_train[:64].astype(np.float32) / 255, mnist_5k.y_train[:64].astype(np.int32)
    trainer.fit(x, y, epochs=1, batch_size=32)
    assert int(trainer.optimizer.iterations.numpy()) == 2
    assert cache.trainer("dense32", 4) is trainer and int(trainer.optimizer.iterations.numpy()) == 0  # Reset.
    first = cache.share(config, 2, 10)
    assert cache.share(config, 2, 10) is first and cache.share(config, 3, 10) is not first
    assert len(first.y_train) + len(first.y_val) == 400  # 4,000 rows in 10 shares.
