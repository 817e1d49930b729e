"""Sweeps: the table, and clients that follow the server from one setting to the next."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedmnist.client.classic import make_client
from fedmnist.launch.flags import parse_args
from fedmnist.settings.client_config import config_for_clients
from fedmnist.settings.server_settings import ServerSettings
from fedmnist.sweep import GRIDS, Setting, comparison_table, target_for


def test_heterogeneity_grid_has_four_partitions_under_fedavg_and_fedprox() -> None:
    grid = GRIDS["heterogeneity"].settings
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
        "| fedavg shards:2 | 0.800 | 0.810 | not in ? | 5.0 |",
    ]


def test_fedavg_paper_grid_is_the_papers_2nn_setup_at_its_scale() -> None:
    grid = GRIDS["fedavg-paper"]
    assert [s.name for s in grid.settings] == [
        "fedavg iid 2nn E=1 B=10",
        "fedavg shards:2 2nn E=1 B=10",
        "fedavg iid 2nn E=5 B=10",
        "fedavg shards:2 2nn E=5 B=10",
    ]
    assert grid.settings[1].folder == "fedavg_shards-2_2nn_E1_B10"
    assert grid.settings[1].overrides() == {
        "strategy": "fedavg",
        "partition": "shards:2",
        "model": "2nn",
        "local_epochs": 1,
        "batch_size": 10,
    }
    args = parse_args(["sweep", "--grid", "fedavg-paper"])
    assert (args.runtime, args.clients, args.fraction_fit, args.fraction_evaluate) == ("simulation", 100, 0.1, 0.1)
    assert parse_args(["sweep", "--grid", "fedavg-paper", "--clients", "10"]).clients == 10  # Flags still win.
    assert parse_args(["sweep"]).runtime == "classic"  # Other grids keep the run's own defaults.
    assert target_for("openml", "2nn") == 0.97 and target_for("fashion-mnist", "2nn") == 0.84


def test_noniid_grid_compares_three_strategies_under_two_skews_at_the_papers_scale() -> None:
    grid = GRIDS["noniid"]
    assert {(s.strategy, s.partition) for s in grid.settings} == {
        (strategy, partition)
        for strategy in ("fedavg", "fedprox", "fedavgm")
        for partition in ("shards:2", "dirichlet:0.1")
    }
    assert {(s.model, s.local_epochs, s.batch_size) for s in grid.settings} == {("2nn", 1, 10)}
    assert parse_args(["sweep", "--grid", "noniid"]).clients == 100


def test_dp_grid_compares_no_dp_with_six_noise_and_clip_pairs_and_its_table_shows_epsilon() -> None:
    grid = GRIDS["dp"]
    assert grid.settings[0].overrides() == {"strategy": "fedavg", "partition": "iid"}
    assert {(s.dp_noise, s.dp_clip) for s in grid.settings[1:]} == {(z, c) for z in (0.1, 0.5, 1.0) for c in (0.1, 1.0)}
    assert grid.settings[1].name == "fedavg iid noise=0.1 clip=0.1"
    assert grid.settings[1].overrides() == {"strategy": "fedavg", "partition": "iid", "dp_noise": 0.1, "dp_clip": 0.1}
    assert parse_args(["sweep", "--grid", "dp"]).runtime == "simulation"
    results = [
        {
            "setting": "fedavg iid",
            "final": 0.74,
            "best": 0.75,
            "first_round_at_target": None,
            "seconds": 30.0,
            "epsilon": None,
            "delta": None,
        },
        {
            "setting": "fedavg iid noise=1 clip=0.1",
            "final": 0.3,
            "best": 0.31,
            "first_round_at_target": None,
            "seconds": 31.0,
            "epsilon": 48.83,
            "delta": 1e-5,
        },
    ]
    assert comparison_table(results).splitlines()[::2] == [
        "| setting | epsilon spent (delta) | final accuracy | best accuracy | first round >= 90% | wall time (s) |",
        "| fedavg iid | no DP | 0.740 | 0.750 | not in ? | 30.0 |",
    ]
    assert (
        comparison_table(results).splitlines()[3]
        == "| fedavg iid noise=1 clip=0.1 | 48.8 (1e-05) | 0.300 | 0.310 | not in ? | 31.0 |"
    )


def test_paper_table_by_hand() -> None:
    results = [
        {
            "setting": "fedavg iid 2nn E=1 B=10",
            "target": 0.84,
            "first_round_at_target": 37,
            "rounds": 100,
            "paper_rounds": 87,
            "final": 0.8712,
            "last_10_mean": 0.8655,
            "best": 0.8731,
            "seconds": 301.26,
        },
        {
            "setting": "fedavg shards:2 2nn E=5 B=10",
            "target": 0.84,
            "first_round_at_target": None,
            "rounds": 100,
            "paper_rounds": None,
            "final": 0.7,
            "last_10_mean": 0.6849,
            "best": 0.75,
            "seconds": 800.0,
        },
    ]
    assert comparison_table(results, paper=True).splitlines() == [
        "| setting | target | rounds to target | paper (MNIST) | final accuracy | mean of last 10 | best accuracy | wall time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        "| fedavg iid 2nn E=1 B=10 | 84% | 37 | 87 | 0.871 | 0.866 | 0.873 | 301.3 |",
        "| fedavg shards:2 2nn E=5 B=10 | 84% | not in 100 | not reported | 0.700 | 0.685 | 0.750 | 800.0 |",
    ]


def test_client_starts_afresh_when_the_run_changes(data_home: str) -> None:
    client = make_client(partition_id=0, num_partitions=5, data_home=data_home)
    config = config_for_clients(ServerSettings(clients=5, model="dense32", keep_optimizer=True), "mnist-5k", "a")(1)
    start = client.get_parameters(config)

    def fit(run_id: str, partition: str) -> tuple[int, set[int]]:
        """Adam's step count after a fit in run ``run_id``, and the digits of the rows it trained on."""
        client.fit(start, {**config, "run-id": run_id, "partition": partition})
        share = client.cache.client({**config, "seed": 42, "partition": partition}, 0, 5)
        return int(share.trainer.optimizer.iterations.numpy()), set(np.unique(share.y_train).tolist())

    steps, digits = fit("a", "iid")
    assert steps == 23 and len(digits) == 10  # 720 rows in batches of 32.
    assert fit("a", "iid")[0] == 46  # Same run: Adam goes on.
    steps, digits = fit("b", "shards:2")
    assert steps == 23 and len(digits) <= 4  # New run: fresh optimizer, and this run's rows.


def test_attacks_grid_crosses_every_defence_with_every_attack_at_two_shares_and_two_partitions(tmp_path: Path) -> None:
    from fedmnist.attacks.catalogue import ATTACKS
    from fedmnist.results.attack_table import attack_table, plot_attack_heatmap

    grid = GRIDS["attacks"]
    defences = ("fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan", "normclip", "centeredclip")
    cells = {(None, None), *((attack, share) for attack in ATTACKS for share in (0.2, 0.33))}
    assert {(s.strategy, s.partition, s.attack, s.malicious) for s in grid.settings} == {
        (defence, partition, attack, share)
        for defence in defences
        for partition in ("iid", "dirichlet:0.5")
        for attack, share in cells
    }
    assert len(grid.settings) == 8 * 2 * 13 and grid.matrix
    assert Setting("krum", "iid", attack="lie", malicious=0.33).folder == "krum_iid_lie_33pc"
    args = parse_args(["sweep", "--grid", "attacks"])
    assert (args.runtime, args.clients, args.dataset) == ("simulation", 20, "fashion-mnist")
    results = [
        {"strategy": s, "partition": "iid", "attack": a, "malicious": m, "final": f, "backdoor_success": b}
        for s, a, m, f, b in (
            ("fedavg", None, None, 0.85, None),
            ("krum", None, None, 0.8, None),
            ("fedavg", "backdoor", 0.2, 0.84, 0.97),
            ("krum", "backdoor", 0.2, 0.79, 0.01),
        )
    ]
    assert attack_table(results).splitlines() == [
        "**iid**",
        "",
        "| attack | fedavg | krum |",
        "| --- | --- | --- |",
        "| no attack | 0.850 | 0.800 |",
        "| backdoor 20% | 0.840 (backdoor 0.97) | 0.790 (backdoor 0.01) |",
    ]
    assert plot_attack_heatmap(results, "attacks", tmp_path / "heat.png").stat().st_size > 10_000
