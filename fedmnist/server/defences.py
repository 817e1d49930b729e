"""Robust aggregation: the rules that stand between an in-bound attack and the global model.

Every update has passed the server's checks (``fedmnist.server.validation``)
before it gets here; the attacks of ``fedmnist.attacks`` pass them too. What
each rule assumes (how many attackers among n) is in
``fedmnist.settings.robustness``; ``--assumed-attackers`` sets it, by default
the most the rule allows.

* ``krum``, ``multikrum`` and ``bulyan``: Flower's ``Krum`` keeping the best-scored
  update or the n - f best (Blanchard et al. 2017) and Flower's ``Bulyan`` (El Mhamdi et al.
  2018), each held to the results a round really has (a rejected update leaves
  fewer than the run was set for).
* ``normclip``: each update scaled down to at most the round's median update
  length, then FedAvg's weighted mean (Sun et al. 2019, "Can you really backdoor
  federated learning?").
* ``centeredclip``: centered clipping (Karimireddy, He and Jaggi 2021, "Learning
  from history for Byzantine robust optimization"): from the previous round's
  aggregate update, three steps of ``v <- v + mean_i clip(u_i - v, tau)`` with
  tau the round's median distance to ``v``. With nobody attacking it moves
  almost as the mean; an attacker moves it by at most tau / n a step.

``decisions`` says, per client of the last round, what the rule did with its
update (the records show it: ``fedmnist.server.update_stats``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from flwr.common import FitRes, NDArrays, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Bulyan, FedAvg, Krum
from flwr.server.strategy.aggregate import aggregate_krum

from fedmnist.attacks.model_poisoning import weights_from
from fedmnist.server.update_stats import flat, flat_rows, krum_scores, unflat

log = logging.getLogger(__name__)

CENTERED_CLIPPING_STEPS = 3


class ScoredKrum(Krum):
    """Flower's Krum, saying which updates it kept; ``multi``: Multi-Krum, the ``n - f`` best of ``n`` results."""

    def __init__(self, *, num_malicious_clients: int, multi: bool = False, **kwargs: Any) -> None:
        super().__init__(num_malicious_clients=num_malicious_clients, **kwargs)
        self.multi = multi
        self.decisions: dict[str, str] = {}

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        # Multi-Krum keeps n - f of the results the round has; 0 is Flower's "Krum's single best".
        self.num_clients_to_keep = max(1, len(results) - self.num_malicious_clients) if self.multi else 0
        weights = [parameters_to_ndarrays(result.parameters) for _, result in results]
        scores = krum_scores([flat(w) for w in weights], self.num_malicious_clients)
        kept = set(np.argsort(scores, kind="stable")[: max(1, self.num_clients_to_keep)].tolist())
        self.decisions = {proxy.cid: "kept" if i in kept else "discarded" for i, (proxy, _) in enumerate(results)}
        return super().aggregate_fit(server_round, results, failures)


class MultiKrum(ScoredKrum):
    """Multi-Krum: the mean of the ``n - f`` updates Krum scores best."""

    def __init__(self, *, num_malicious_clients: int, **kwargs: Any) -> None:
        super().__init__(num_malicious_clients=num_malicious_clients, multi=True, **kwargs)


class HeldBulyan(Bulyan):
    """Flower's Bulyan, its ``f`` lowered for a round whose results are fewer than ``4f + 3`` (with a warning)."""

    def __init__(self, *, num_malicious_clients: int, **kwargs: Any) -> None:
        super().__init__(num_malicious_clients=num_malicious_clients, first_aggregation_rule=aggregate_krum, **kwargs)
        self.aggregation_rule_kwargs = {"to_keep": 0}  # Krum's single choice at each of Bulyan's selection steps.
        self.assumed = num_malicious_clients
        self.decisions: dict[str, str] = {}

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        possible = max(0, (len(results) - 3) // 4)
        self.num_malicious_clients = min(self.assumed, possible)
        if self.num_malicious_clients < self.assumed:
            log.warning(
                "round %d: %d updates withstand %d attackers under Bulyan (n >= 4f + 3), not %d",
                server_round,
                len(results),
                self.num_malicious_clients,
                self.assumed,
            )
        return super().aggregate_fit(server_round, results, failures)


class UpdateRule(FedAvg):
    """FedAvg whose new model is the global one plus ``combine`` of the clients' updates (not their mean)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.round_start: NDArrays = []  # The global weights this round's updates started from.
        self.decisions: dict[str, str] = {}

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, Any]]:
        self.round_start = parameters_to_ndarrays(parameters)
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if not results:
            return None, {}
        updates = flat_rows([parameters_to_ndarrays(result.parameters) for _, result in results], self.round_start)
        examples = np.array([result.num_examples for _, result in results], dtype=np.float64)
        combined, scales = self.combine(updates, examples / examples.sum())
        self.decisions = {
            proxy.cid: "kept" if scale >= 1.0 else f"clipped x{scale:.3g}" for (proxy, _), scale in zip(results, scales)
        }
        metrics: dict[str, Scalar] = {}
        if self.fit_metrics_aggregation_fn:
            metrics = self.fit_metrics_aggregation_fn([(result.num_examples, result.metrics) for _, result in results])
        return ndarrays_to_parameters(weights_from(self.round_start, unflat(combined, self.round_start))), metrics

    def combine(self, updates: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, list[float]]:
        """The step the global model takes from ``updates`` (one flat float64 row each; weights sum to 1),
        and each update's scale."""
        raise NotImplementedError


class NormClipping(UpdateRule):
    """Every update at most the round's median update length, then the weighted mean."""

    def combine(self, updates: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, list[float]]:
        scales = clip_scales(row_lengths(updates))
        return weighted_sum(updates, weights * scales), scales.tolist()


class CenteredClipping(UpdateRule):
    """Centered clipping around the previous round's aggregate update (``previous``, kept in checkpoints)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.previous: NDArrays = []

    def combine(self, updates: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, list[float]]:
        center = flat(self.previous) if self.previous else np.zeros(updates.shape[1])
        scales = np.ones(len(updates))
        for _ in range(CENTERED_CLIPPING_STEPS):
            differences = updates - center
            scales = clip_scales(row_lengths(differences))
            center = center + weighted_sum(differences, weights * scales)
        self.previous = unflat(center, self.round_start)
        return center, scales.tolist()


def clip_scales(lengths: list[float]) -> np.ndarray:
    """Each length's factor to be at most the median length: ``min(1, median / length)``."""
    values = np.asarray(lengths, dtype=np.float64)
    tau = float(np.median(values))
    return np.minimum(1.0, np.divide(tau, values, out=np.ones_like(values), where=values > 0))


def row_lengths(rows: np.ndarray) -> list[float]:
    """The Euclidean length of each row."""
    return [float(np.linalg.norm(row)) for row in rows]


def weighted_sum(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_i weights[i] x rows[i]``, one row after the other.

    Not ``weights @ rows``: BLAS may add in another order, and a model's weights
    would then depend on the machine's BLAS in their last bits (the weights
    checksum of a run with a seed is the same everywhere).
    """
    total = np.zeros(rows.shape[1])
    for weight, row in zip(weights, rows):
        total += weight * row
    return total
