"""The centralized baseline: same model, the clients' rows in one place, same epochs."""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import PROJECT_ROOT
from fedmnist.server.baseline import train_centrally, union_of_client_rows
from fedmnist.settings.server_settings import ServerSettings


def test_union_holds_every_clients_training_rows_but_no_validation_rows(mnist_5k) -> None:
    x, y = union_of_client_rows(mnist_5k, num_clients=3, seed=42)
    # 4,000 rows in shares of 1334/1333/1333, each keeping 133 back for validation.
    assert x.shape == (3601, 784) and y.shape == (3601,)
    assert 0.0 <= x.min() and x.max() <= 1.0


@pytest.mark.slow
def test_run_sh_central_prints_the_reference_the_readme_quotes(data_home: str) -> None:
    """``./run.sh central``: the command behind the experiments page's central reference (88.3%), on a small slice."""
    done = subprocess.run(
        [
            str(PROJECT_ROOT / "run.sh"),
            "central",
            "--dataset",
            "mnist-5k",
            "--data-home",
            data_home,
            "--clients",
            "3",
            "--model",
            "dense32",
            "--epochs",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "mnist-5k: the rows of 3 clients, dense32, batch 32, Adam 0.001"
    matches = [
        re.fullmatch(rf"epoch {n}/2: held-out accuracy (\d+\.\d)%", line) for n, line in enumerate(lines[1:3], start=1)
    ]
    epochs = [float(match[1]) for match in matches if match]
    assert len(epochs) == 2, lines
    assert 50 < epochs[0] < epochs[1]
    assert lines[3:] == [f"best held-out accuracy {epochs[1]:.1f}% (epoch 2 of 2)"]


def test_the_experiments_page_quotes_the_central_reference_with_its_command() -> None:
    page = (PROJECT_ROOT / "docs" / "experiments.md").read_text()
    assert "./run.sh central --dataset fashion-mnist --clients 100 --model 2nn --batch-size 10 --epochs 10" in page


def test_train_centrally_reports_a_curve_per_round_that_learns(mnist_5k) -> None:
    curves = train_centrally(mnist_5k, ServerSettings(clients=3, rounds=2))
    assert [r for r, _ in curves["accuracy"]] == [0, 1, 2] == [r for r, _ in curves["loss"]]
    assert curves["accuracy"][0][1] < 0.3 and curves["accuracy"][2][1] > 0.8
    assert curves["loss"][2][1] < curves["loss"][0][1]
