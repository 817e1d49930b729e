"""How each client's update compares with the others': what lets a person see who is attacking.

For every accepted update of a round, the record keeps its length, its
distance to the round's robust centre (the coordinate-wise median of the
updates) and its cosine to that centre, beside what the aggregation did with
it (``fedmnist.server.defences``: kept, discarded, clipped). The centre, not
the mean: two IPM attackers of ten drag the mean toward themselves (their
cosine to it came out positive here), not the median. An attacker that stays
inside the checks still tends to stand out in one of these: a sign-flip or IPM
update points away from the centre (cosine < 0), LIE attackers send one same
update close to it, a free rider has length 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.common import FitRes, NDArrays, parameters_to_ndarrays
from flwr.server.client_proxy import ClientProxy

from fedmnist.results.records import UpdateNumbers


def flat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """All of a model's (or update's) arrays as one float64 vector."""
    return np.concatenate([np.ravel(a).astype(np.float64) for a in arrays])


def coordinate_median(rows: np.ndarray) -> np.ndarray:
    """The median of each column of ``rows`` (one row per update): ``np.median(rows, axis=0)``, sooner.

    NumPy's median partitions each column apart; one sort down the columns gave
    the same numbers in 4 ms instead of 14 ms for 10 updates of the mlp here
    (42 ms against 7.5 ms for 30).
    """
    ordered = np.sort(rows, axis=0)
    middle = len(rows) // 2
    return ordered[middle] if len(rows) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def krum_scores(vectors: Sequence[np.ndarray], num_malicious: int) -> np.ndarray:
    """Krum's score per vector: the sum of squared distances to its ``n - f - 2`` nearest others (lower: better)."""
    stacked = np.stack(vectors)
    squared = np.sum(stacked**2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * stacked @ stacked.T, 0.0)
    nearest = max(1, len(vectors) - num_malicious - 2)
    return np.array([np.sort(row)[1 : nearest + 1].sum() for row in distances])


def update_numbers(
    start: NDArrays, results: list[tuple[ClientProxy, FitRes]], decisions: Mapping[str, str]
) -> dict[str, UpdateNumbers]:
    """Per client (Flower's id): its update's length, and its distance and cosine to the median update."""
    if not results or not start:
        return {}
    origin = flat(start)
    updates = np.stack([flat(parameters_to_ndarrays(result.parameters)) - origin for _, result in results])
    centre = coordinate_median(updates)
    centre_length = float(np.linalg.norm(centre))
    numbers: dict[str, UpdateNumbers] = {}
    for (proxy, _), update in zip(results, updates):
        length = float(np.linalg.norm(update))
        entry: UpdateNumbers = {
            "norm": length,
            "distance_to_median": float(np.linalg.norm(update - centre)),
            "cosine_to_median": float(update @ centre / (length * centre_length)) if length and centre_length else 0.0,
        }
        if proxy.cid in decisions:
            entry["defence"] = decisions[proxy.cid]
        numbers[proxy.cid] = entry
    return numbers
