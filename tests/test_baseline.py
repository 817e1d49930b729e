"""The centralized baseline: same model, the clients' rows in one place, same epochs."""

from __future__ import annotations

from fedmnist.baseline import train_centrally, union_of_client_rows


def test_union_holds_every_clients_training_rows_but_no_validation_rows(mnist_5k) -> None:
    x, y = union_of_client_rows(mnist_5k, num_clients=3, seed=42)
    # 4,000 rows in shares of 1334/1333/1333, each keeping 133 back for validation.
    assert x.shape == (3601, 784) and y.shape == (3601,)
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_train_centrally_reports_a_curve_per_round_that_learns(mnist_5k) -> None:
    curves = train_centrally(mnist_5k, num_clients=3, rounds=2)
    assert [r for r, _ in curves["accuracy"]] == [0, 1, 2] == [r for r, _ in curves["loss"]]
    assert curves["accuracy"][0][1] < 0.3 < 0.8 < curves["accuracy"][2][1]
    assert curves["loss"][2][1] < curves["loss"][0][1]
