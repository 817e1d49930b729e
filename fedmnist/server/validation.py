"""Checks every client result before it counts: weights, example counts and metrics.

Federated learning exists for participants the server does not fully trust,
so nothing a client sends reaches aggregation unchecked. ``UpdateValidator``
checks each round's results before the run strategy aggregates them:

* **fit results** are rejected when their weights cannot be decoded, do not
  have the global model's arrays, shapes and dtypes, hold a non-finite value,
  or lie more than ``max_norm_factor`` times the round's median distance from
  the global weights (a scaled or random model), or farther than ``max_norm``
  (the clipping norm the server asked clients to clip to, under client-side
  differential privacy: an update that was not clipped would get less noise
  than the privacy accounting assumes);
* **fit and evaluate results** are rejected when ``num_examples`` is not a
  positive whole number, when a metric is not a finite number (``"abc"``,
  NaN), or (evaluate) when the loss is not finite;
* the **example count** a result is weighted by is capped at the largest
  share any client of this run holds (the server cuts the same partition, so
  it knows: ``max_fit_examples``/``max_evaluate_examples``), and at
  ``max_examples_factor`` times the median of the *other* clients' counts.
  No client claiming ``10**12`` examples weighs more than the largest honest
  client could. (FedAvg still gives it that weight: against clients that
  send poisoned weights, use a robust strategy such as ``fedmedian`` or ``krum``.)

Rejected results are logged with the client and the reason and passed on as
failures (``RejectedResult``), so the round's record counts them and neither
the model nor the metrics ever see them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TypeVar

import numpy as np
from flwr.common import EvaluateRes, FitRes, NDArrays, Parameters, parameters_to_ndarrays
from flwr.server.client_proxy import ClientProxy

from fedmnist.results import records
from fedmnist.settings import defaults

log = logging.getLogger(__name__)

Res = TypeVar("Res", FitRes, EvaluateRes)


class RejectedResult(Exception):
    """A client's result that failed validation; its message says which client and why."""


class RejectedUpdate(RejectedResult):
    """A rejected fit result (a training update)."""


class UpdateValidator:
    """Checks one round's client results before they are aggregated, and caps their example counts.

    ``start_round`` keeps the global weights the round's updates start from;
    ``check_updates``/``check_evaluations`` split results into accepted ones and
    ``RejectedResult`` errors (logged with the client and the reason), which the
    run strategy (``fedmnist.server.run_strategy``) passes on as failures.
    """

    def __init__(
        self,
        *,
        max_norm_factor: float = defaults.MAX_UPDATE_NORM_FACTOR,
        max_examples_factor: float = defaults.MAX_EXAMPLES_FACTOR,
        max_fit_examples: int | None = None,
        max_evaluate_examples: int | None = None,
        max_norm: float | None = None,
    ) -> None:
        self.max_norm_factor = max_norm_factor
        self.max_norm = max_norm  # The longest update allowed (client-side DP's clipping norm), if any.
        self.max_examples_factor = max_examples_factor
        self.max_fit_examples = max_fit_examples  # The largest training share of the run's partition.
        self.max_evaluate_examples = max_evaluate_examples  # The largest validation slice.
        self.round_start: NDArrays = []  # The global weights this round's updates started from.
        self._capped: set[str] = set()  # Clients whose capped count was reported (once each, not every round).

    def start_round(self, parameters: Parameters) -> None:
        """Remember the global weights this round's updates start from."""
        self.round_start = parameters_to_ndarrays(parameters)

    def check_updates(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> tuple[list[tuple[ClientProxy, FitRes]], list[RejectedUpdate]]:
        """The fit results that may be aggregated (counts capped), and the rejected ones as errors."""
        accepted, rejected = validate_updates(
            results,
            self.round_start,
            self.max_norm_factor,
            self.max_examples_factor,
            self.max_fit_examples,
            self.max_norm,
        )
        _log_rejections(server_round, "update", rejected)
        self._report_caps(results, accepted)
        return accepted, rejected

    def check_evaluations(
        self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]]
    ) -> tuple[list[tuple[ClientProxy, EvaluateRes]], list[RejectedResult]]:
        """The evaluate results that may be aggregated (counts capped), and the rejected ones as errors."""
        accepted, rejected = validate_evaluations(results, self.max_examples_factor, self.max_evaluate_examples)
        _log_rejections(server_round, "evaluation", rejected)
        self._report_caps(results, accepted)
        return accepted, rejected

    def _report_caps(self, claimed: list[tuple[ClientProxy, Res]], weighted: list[tuple[ClientProxy, Res]]) -> None:
        """Warn the first time a client's example count is capped; later rounds only at DEBUG."""
        claims = {proxy.cid: result.num_examples for proxy, result in claimed}
        for proxy, result in weighted:
            if claims.get(proxy.cid, 0) > result.num_examples:
                level = logging.DEBUG if proxy.cid in self._capped else logging.WARNING
                self._capped.add(proxy.cid)
                log.log(
                    level,
                    "%s claims %d examples; weighted as %d (at most the largest share of the "
                    "partition and %g x the median of the others'; said once per client)",
                    client_name(proxy, result),
                    claims[proxy.cid],
                    result.num_examples,
                    self.max_examples_factor,
                )


def client_name(proxy: ClientProxy, result: FitRes | EvaluateRes | None = None) -> str:
    """``client 3`` (its partition id), ``client 4 (web: alice)`` for a WebSocket participant.

    A result without a partition id (a client of another program) is named by
    the start of Flower's id for it, the only name Flower has.
    """
    metrics = getattr(result, "metrics", None)
    metrics = metrics if isinstance(metrics, Mapping) else {}
    partition_id, participant = metrics.get("partition_id"), metrics.get(defaults.PARTICIPANT_KEY)
    entry: dict[str, object] = {"cid": proxy.cid}
    if isinstance(partition_id, int) and not isinstance(partition_id, bool):  # A hostile client may send anything.
        entry.update(
            partition_id=partition_id, participant=_show(participant)[1:-1] if isinstance(participant, str) else None
        )
    return records.client_name(entry)


def _log_rejections(server_round: int, what: str, rejected: Sequence[RejectedResult]) -> None:
    for error in rejected:
        log.warning("round %d: rejected %s: %s", server_round, what, error)


def validate_updates(
    results: list[tuple[ClientProxy, FitRes]],
    global_weights: NDArrays,
    max_norm_factor: float,
    max_examples_factor: float = defaults.MAX_EXAMPLES_FACTOR,
    max_examples: int | None = None,
    max_norm: float | None = None,
) -> tuple[list[tuple[ClientProxy, FitRes]], list[RejectedUpdate]]:
    """Split fit ``results`` into accepted ones (example counts capped) and RejectedUpdate errors."""
    well_formed, rejected, distances = [], [], []
    for proxy, result in results:
        problem = result_problem(result)
        weights: NDArrays = []
        if not problem:
            try:
                weights = parameters_to_ndarrays(result.parameters)
            except Exception as error:  # noqa: BLE001  Any bytes may arrive; none may stop the round.
                problem = f"weights cannot be decoded ({type(error).__name__})"
        problem = problem or _form_problem(weights, global_weights)
        distance = update_norm(weights, global_weights) if not problem else 0.0
        if not problem and max_norm is not None and distance > max_norm:
            problem = (
                f"update norm {distance:.3g} is longer than the clipping norm allows ({max_norm:.3g}): not clipped"
            )
        if problem:
            rejected.append(RejectedUpdate(f"{client_name(proxy, result)}: {problem}"))
            continue
        well_formed.append((proxy, result))
        distances.append(distance)
    if not distances:
        return well_formed, rejected
    median = float(np.median(distances))
    accepted = []
    for (proxy, result), distance in zip(well_formed, distances):
        if median > 0 and distance > max_norm_factor * median:
            rejected.append(
                RejectedUpdate(
                    f"{client_name(proxy, result)}: update norm {distance:.3g} is more than "
                    f"{max_norm_factor:g} x the round's median {median:.3g}"
                )
            )
        else:
            accepted.append((proxy, result))
    return cap_examples(accepted, max_examples_factor, max_examples), rejected


def validate_evaluations(
    results: list[tuple[ClientProxy, EvaluateRes]],
    max_examples_factor: float = defaults.MAX_EXAMPLES_FACTOR,
    max_examples: int | None = None,
) -> tuple[list[tuple[ClientProxy, EvaluateRes]], list[RejectedResult]]:
    """Split evaluate ``results`` into accepted ones (example counts capped) and RejectedResult errors."""
    accepted, rejected = [], []
    for proxy, result in results:
        problem = result_problem(result)
        if not problem and not _is_finite_number(result.loss):
            problem = f"loss {_show(result.loss)} is not a finite number"
        if problem:
            rejected.append(RejectedResult(f"{client_name(proxy, result)}: {problem}"))
        else:
            accepted.append((proxy, result))
    return cap_examples(accepted, max_examples_factor, max_examples), rejected


def result_problem(result: FitRes | EvaluateRes) -> str:
    """Why a result's example count or metrics cannot be used, or "" when they can."""
    count = result.num_examples
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        return f"num_examples {_show(count)} is not a positive whole number"
    # The simulation hands metrics over as Flower's MetricRecord, a mapping but not a dict.
    metrics = dict(result.metrics) if isinstance(result.metrics, Mapping) else None
    if metrics is None:
        return "metrics are not a dictionary"
    for key, value in metrics.items():
        if isinstance(value, str) and len(value) <= defaults.TEXT_METRICS.get(key, -1):
            continue
        if not _is_finite_number(value):
            return f"metric {_show(key)} is {_show(value)}, not a finite number"
    return ""


def cap_examples(
    results: list[tuple[ClientProxy, Res]], factor: float, ceiling: int | None = None
) -> list[tuple[ClientProxy, Res]]:
    """Cap each result's ``num_examples`` at ``ceiling`` and at ``factor`` x the median of the others' counts.

    ``[100, 120, 10**12]`` with factor 10 becomes ``[100, 120, 1100]``: the
    third client's claim is held to ten times the median of 100 and 120. A
    lone result is capped by ``ceiling`` only.
    """
    counts = [result.num_examples for _, result in results]
    capped = []
    for index, (proxy, result) in enumerate(results):
        others = counts[:index] + counts[index + 1 :]
        limit = max(1, math.floor(factor * float(np.median(others)))) if others else result.num_examples
        limit = min(limit, ceiling) if ceiling else limit
        if result.num_examples > limit:
            result = replace(result, num_examples=limit)
        capped.append((proxy, result))
    return capped


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


def _is_finite_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # An integer too large for a float.
        return False


def _show(value: object) -> str:
    """A short repr for log lines: a hostile client may send megabytes in one string."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
