"""Checks every client update before it reaches aggregation.

``ValidatingStrategy`` wraps any strategy of the app. An update is rejected
when it does not have the global model's number of arrays, shapes and dtypes,
when any value is not finite, or when its distance from the global weights is
more than ``max_norm_factor`` times the round's median distance (a client
sending a scaled or random model). Rejected updates are logged with the client
and the reason and passed on as failures (``RejectedUpdate``), so the round's
record counts them and the global model never sees them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from flwr.common import FitIns, FitRes, NDArrays, Parameters, Scalar, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from fedmnist import config
from fedmnist.strategy import DelegatingStrategy

log = logging.getLogger(__name__)


class RejectedUpdate(Exception):
    """A client's update that failed validation; its message says which client and why."""


class ValidatingStrategy(DelegatingStrategy):
    """Drops invalid client updates before ``inner`` aggregates them."""

    def __init__(self, inner: Strategy, *, max_norm_factor: float = config.MAX_UPDATE_NORM_FACTOR) -> None:
        self.inner = inner
        self.max_norm_factor = max_norm_factor
        self._global: NDArrays | None = None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        self._global = parameters_to_ndarrays(parameters)  # What this round's updates start from.
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        accepted, rejected = validate_updates(results, self._global or [], self.max_norm_factor)
        for error in rejected:
            log.warning("round %d: %s", server_round, error)
        return self.inner.aggregate_fit(server_round, accepted, [*failures, *rejected])


def validate_updates(
    results: list[tuple[ClientProxy, FitRes]], global_weights: NDArrays, max_norm_factor: float
) -> tuple[list[tuple[ClientProxy, FitRes]], list[RejectedUpdate]]:
    """Split ``results`` into accepted ones and RejectedUpdate errors."""
    well_formed, rejected, distances = [], [], []
    for proxy, result in results:
        weights = parameters_to_ndarrays(result.parameters)
        problem = _form_problem(weights, global_weights)
        if problem:
            rejected.append(RejectedUpdate(f"rejected update from client {proxy.cid}: {problem}"))
            continue
        well_formed.append((proxy, result))
        distances.append(update_norm(weights, global_weights))
    if not distances:
        return well_formed, rejected
    median = float(np.median(distances))
    accepted = []
    for (proxy, result), distance in zip(well_formed, distances):
        if median > 0 and distance > max_norm_factor * median:
            rejected.append(RejectedUpdate(
                f"rejected update from client {proxy.cid}: update norm {distance:.3g} is more than "
                f"{max_norm_factor:g} x the round's median {median:.3g}"
            ))
        else:
            accepted.append((proxy, result))
    return accepted, rejected


def update_norm(weights: NDArrays, global_weights: NDArrays) -> float:
    """Euclidean length of ``weights - global_weights`` over all arrays."""
    return float(np.sqrt(sum(np.sum((w.astype(np.float64) - g) ** 2) for w, g in zip(weights, global_weights))))


def _form_problem(weights: NDArrays, global_weights: NDArrays) -> str:
    """Why ``weights`` cannot be averaged with the global model's, or "" when they can."""
    if len(weights) != len(global_weights):
        return f"{len(weights)} arrays, the model has {len(global_weights)}"
    for index, (w, g) in enumerate(zip(weights, global_weights)):
        if w.shape != g.shape or w.dtype != g.dtype:
            return f"array {index} is {w.dtype}{list(w.shape)}, the model's is {g.dtype}{list(g.shape)}"
        if not np.isfinite(w).all():
            return f"array {index} has non-finite values"
    return ""
