"""Sweeps: the table, and clients that follow the server from one setting to the next."""

from __future__ import annotations

import numpy as np

from fedmnist.keras_client import make_client
from fedmnist.sweep import GRIDS, Setting, comparison_table


def test_heterogeneity_grid_has_four_partitions_under_fedavg_and_fedprox() -> None:
    grid = GRIDS["heterogeneity"]
    assert {s.partition for s in grid} == {"iid", "dirichlet:0.5", "dirichlet:0.1", "shards:2"}
    assert {s.strategy for s in grid} == {"fedavg", "fedprox"} and len(grid) == 8
    assert Setting("fedprox", "dirichlet:0.1").folder == "fedprox_dirichlet-0.1"


def test_comparison_table_by_hand() -> None:
    results = [
        {"setting": "fedavg iid", "final": 0.9461, "best": 0.9472, "first_round_at_target": 4, "seconds": 12.34},
        {"setting": "fedavg shards:2", "final": 0.8, "best": 0.81, "first_round_at_target": None, "seconds": 5.0},
    ]
    assert comparison_table(results).splitlines()[2:] == [
        "| fedavg iid | 0.946 | 0.947 | 4 | 12.3 |",
        "| fedavg shards:2 | 0.800 | 0.810 | not reached | 5.0 |",
    ]


def test_client_starts_afresh_when_the_run_changes(data_home: str) -> None:
    client = make_client(partition_id=0, num_partitions=5, dataset="mnist-5k", data_home=data_home)
    start = client.get_parameters({})
    first_trainer = client.trainer
    client.fit(start, {"run-id": "a", "partition": "iid"})
    assert client.trainer is first_trainer and len(np.unique(client.y_train)) == 10  # Same run set-up.
    client.fit(start, {"run-id": "a", "partition": "iid"})
    assert client.trainer is first_trainer  # Same run: keeps its optimizer state.
    client.fit(start, {"run-id": "b", "partition": "shards:2"})
    assert client.trainer is not first_trainer  # New run: fresh model and optimizer...
    assert len(np.unique(np.concatenate([client.y_train, client.y_val]))) <= 2  # ...and this run's rows.
