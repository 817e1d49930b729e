"""Weighted metric aggregation and the FedAvg configuration."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from flwr.common import Scalar, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.strategy import FedAvg, FedAvgM, FedProx

from conftest import PROJECT_ROOT
from fedmnist.server.strategies import (
    STRATEGIES,
    build_strategy,
    centralized_evaluate_fn,
    reporting_clients,
    weighted_average,
)
from fedmnist.settings import defaults
from fedmnist.settings.client_config import client_keys, config_for_clients
from fedmnist.settings.server_settings import ServerSettings


def test_weighted_average_weights_by_examples() -> None:
    # (100 * 0.9 + 300 * 0.5) / 400 = 240 / 400 = 0.6; loss (100 * 1 + 300 * 3) / 400 = 2.5.
    result = weighted_average([(100, {"accuracy": 0.9, "loss": 1.0}), (300, {"accuracy": 0.5, "loss": 3.0})])
    assert result == pytest.approx({"accuracy": 0.6, "loss": 2.5})


def test_weighted_average_differs_from_plain_mean() -> None:
    result = weighted_average([(1, {"accuracy": 1.0}), (3, {"accuracy": 0.0})])
    assert result["accuracy"] == pytest.approx(0.25)  # A plain mean would say 0.5.


def test_weighted_average_uses_the_clients_that_reported_each_key_and_skips_timings() -> None:
    # One client leaving "accuracy" out must not erase the round's accuracy for everyone:
    # accuracy (2 * 0.5 + 6 * 0.9) / 8 = 0.8 from the two that sent it; loss from the one that did.
    metrics: list[tuple[int, dict[str, Scalar]]] = [
        (2, {"accuracy": 0.5, "fit_seconds": 3.0}),
        (6, {"accuracy": 0.9}),
        (4, {"loss": 1.0}),
    ]
    assert weighted_average(metrics) == pytest.approx({"accuracy": 0.8, "loss": 1.0})
    assert reporting_clients([values for _, values in metrics]) == {"accuracy": 2, "loss": 1}


def test_weighted_average_of_no_examples_is_empty() -> None:
    assert weighted_average([]) == {}
    assert weighted_average([(0, {"accuracy": 1.0})]) == {}


WEIGHTS = [np.ones((2, 2), np.float32), np.zeros(2, np.float32)]


def test_build_strategy_is_fedavg_over_all_clients_with_weighted_metrics() -> None:
    weights = WEIGHTS
    strategy = build_strategy(ServerSettings(clients=3, min_clients=3), weights)
    assert isinstance(strategy, FedAvg)
    assert (strategy.min_fit_clients, strategy.min_evaluate_clients, strategy.min_available_clients) == (3, 3, 3)
    assert strategy.fit_metrics_aggregation_fn is weighted_average
    assert strategy.evaluate_metrics_aggregation_fn is weighted_average
    initial = strategy.initialize_parameters(client_manager=SimpleClientManager())
    assert initial is not None
    restored = parameters_to_ndarrays(initial)
    assert all(np.array_equal(a, b) for a, b in zip(restored, weights))


def test_the_config_for_clients_carries_every_setting_marked_for_them_and_the_round() -> None:
    settings = ServerSettings(
        clients=5, seed=3, partition="shards:2", model="dense32", local_epochs=2, batch_size=16, learning_rate=0.01
    )
    config = config_for_clients(replace(settings, keep_optimizer=True), "mnist-5k", run_id="a")
    assert config(7) == {
        "server-round": 7,
        "run-id": "a",
        "num-partitions": 5,
        "dataset": "mnist-5k",  # The source the server resolved, not --dataset auto.
        "seed": 3,
        "partition": "shards:2",
        "model": "dense32",
        "local-epochs": 2,
        "batch-size": 16,
        "learning-rate": 0.01,
        "keep-optimizer": True,
        "attack": "none",
        "malicious": 0.0,
    }
    assert set(config(7)) == set(client_keys())
    assert build_strategy(settings, WEIGHTS).on_fit_config_fn(1)["local-epochs"] == 2  # type: ignore[misc]


def test_centralized_evaluate_fn_reports_loss_and_accuracy() -> None:
    evaluate_fn = centralized_evaluate_fn(lambda weights: (0.25, 0.75))
    assert evaluate_fn(3, [], {}) == (0.25, {"accuracy": 0.75, "loss": 0.25})


def test_every_strategy_name_builds_its_flower_class_with_our_metrics() -> None:
    assert tuple(STRATEGIES) == defaults.STRATEGIES
    for name, strategy_class in STRATEGIES.items():
        strategy = build_strategy(ServerSettings(strategy=name, clients=4, min_clients=4), WEIGHTS)
        assert type(strategy) is strategy_class
        assert strategy.evaluate_metrics_aggregation_fn is weighted_average


def test_fraction_fit_samples_part_of_the_clients_but_waits_for_all() -> None:
    strategy = build_strategy(ServerSettings(clients=10, fraction_fit=0.3, min_clients=10), WEIGHTS)
    assert strategy.num_fit_clients(10) == (3, 10)  # Train 3 of them, once all 10 are connected.
    assert strategy.min_available_clients == 10 and strategy.min_evaluate_clients == 10


def test_fedprox_carries_mu_and_unknown_names_fail() -> None:
    fedprox = build_strategy(ServerSettings(strategy="fedprox", clients=2, proximal_mu=0.5, min_clients=2), WEIGHTS)
    assert isinstance(fedprox, FedProx) and fedprox.proximal_mu == 0.5
    with pytest.raises(ValueError, match="unknown strategy 'fedsgd'"):
        build_strategy(ServerSettings(strategy="fedsgd", clients=2, min_clients=2), WEIGHTS)


def test_fedavgm_takes_the_server_momentum_and_learning_rate_it_is_given() -> None:
    default = build_strategy(ServerSettings(strategy="fedavgm", clients=2, min_clients=2), WEIGHTS)
    assert isinstance(default, FedAvgM)
    assert (default.server_momentum, default.server_learning_rate) == (0.9, 1.0)
    tuned = build_strategy(
        ServerSettings(strategy="fedavgm", clients=2, server_momentum=0.5, server_learning_rate=0.3, min_clients=2),
        WEIGHTS,
    )
    assert isinstance(tuned, FedAvgM)
    assert (tuned.server_momentum, tuned.server_learning_rate) == (0.5, 0.3)


@pytest.mark.parametrize("page", ["README.md", "docs/configuration.md"])
def test_the_flag_tables_list_exactly_the_strategies_and_models_the_suite_proves_train(page: str) -> None:
    """The flag tables name what the sweep test (every strategy trains every round) and the model tests run."""
    lines = (PROJECT_ROOT / page).read_text().splitlines()
    rows = {
        flag: next(line.split("|")[3] for line in lines if line.startswith(f"| {flag} | `"))
        for flag in ("`--strategy`", "`--model`")
    }
    assert re.findall(r"`([\w-]+)`", rows["`--strategy`"]) == list(defaults.STRATEGIES)
    assert re.findall(r"`([\w-]+)`", rows["`--model`"]) == list(defaults.MODELS)
