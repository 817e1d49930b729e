"""Flower's FedAvg, configured for this app.

FedAvg (McMahan et al. 2017, https://arxiv.org/abs/1602.05629) averages the
clients' weights in proportion to their number of examples. Its metrics
aggregation is ours: ``weighted_average`` averages ``accuracy`` and ``loss``
the same way, for fit and for evaluate, so the History keeps both.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.common import Metrics, NDArrays, Scalar, ndarrays_to_parameters
from flwr.server.strategy import FedAvg

from fedmnist import config

EvaluateFn = Callable[[int, NDArrays, dict[str, Scalar]], "tuple[float, dict[str, Scalar]] | None"]


def weighted_average(metrics: list[tuple[int, Metrics]]) -> Metrics:
    """Average each of ``config.METRIC_KEYS`` over clients, weighted by their examples.

    ``[(100, {"accuracy": 0.9}), (300, {"accuracy": 0.5})]`` gives
    ``{"accuracy": 0.6}``. A key is left out unless every client reported it;
    other keys (timings) are not averaged. No examples at all gives ``{}``.
    """
    total = sum(num_examples for num_examples, _ in metrics)
    if total == 0:
        return {}
    return {
        key: sum(num_examples * float(values[key]) for num_examples, values in metrics) / total
        for key in config.METRIC_KEYS
        if all(key in values for _, values in metrics)
    }


def fit_config(
    *,
    local_epochs: int = config.LOCAL_EPOCHS,
    batch_size: int = config.BATCH_SIZE,
    learning_rate: float = config.LEARNING_RATE,
) -> Callable[[int], dict[str, Scalar]]:
    """The per-round fit config sent to clients (the same every round)."""

    def on_fit_config(server_round: int) -> dict[str, Scalar]:
        return {
            "server-round": server_round,
            "local-epochs": local_epochs,
            "batch-size": batch_size,
            "learning-rate": learning_rate,
        }

    return on_fit_config


def build_strategy(
    *,
    num_clients: int,
    initial_weights: NDArrays | None = None,
    evaluate_fn: EvaluateFn | None = None,
    on_fit_config_fn: Callable[[int], dict[str, Scalar]] | None = None,
) -> FedAvg:
    """FedAvg that trains and evaluates on all ``num_clients`` clients every round.

    ``initial_weights`` seed the global model; without them Flower asks one
    client for its initial weights. ``evaluate_fn`` is the server-side
    (centralized) evaluation.
    """
    return FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=1.0,
        min_fit_clients=num_clients,
        min_evaluate_clients=num_clients,
        min_available_clients=num_clients,
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=on_fit_config_fn or fit_config(),
        initial_parameters=None if initial_weights is None else ndarrays_to_parameters(initial_weights),
        fit_metrics_aggregation_fn=weighted_average,
        evaluate_metrics_aggregation_fn=weighted_average,
    )


def centralized_evaluate_fn(
    evaluate: Callable[[NDArrays], tuple[float, float]],
) -> EvaluateFn:
    """Wrap ``evaluate(weights) -> (loss, accuracy)`` on the held-out set for Flower."""

    def evaluate_fn(server_round: int, weights: NDArrays, _: dict[str, Scalar]) -> tuple[float, dict[str, Scalar]]:
        loss, accuracy = evaluate(weights)
        return loss, {"accuracy": accuracy, "loss": loss}

    return evaluate_fn

