"""Poisoned updates made from honest ones (``fedmnist.attacks.catalogue`` says where each comes from).

An *update* here is a list of arrays ``trained - start``, the step a client's
training took from the global model ``start``; each function returns the
weights the attacker sends (``start + poisoned update``), in the model's dtypes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
from flwr.common import NDArrays

SIGN_FLIP_SCALE = 3.0
IPM_EPSILON = 3.0


def update_of(weights: NDArrays, start: NDArrays) -> NDArrays:
    """``weights - start`` in float64."""
    return [w.astype(np.float64) - s for w, s in zip(weights, start)]


def weights_from(start: NDArrays, update: NDArrays) -> NDArrays:
    """``start + update`` in ``start``'s dtypes."""
    return [(s + u).astype(s.dtype) for s, u in zip(start, update)]


def sign_flip(start: NDArrays, honest: NDArrays, scale: float = SIGN_FLIP_SCALE) -> NDArrays:
    """The honest update negated and scaled: ``start - scale x (honest - start)``."""
    return weights_from(start, [-scale * u for u in update_of(honest, start)])


def free_rider(start: NDArrays) -> NDArrays:
    """The global model back, untrained."""
    return [s.copy() for s in start]


def inner_product_manipulation(start: NDArrays, benign: Sequence[NDArrays], epsilon: float = IPM_EPSILON) -> NDArrays:
    """``-epsilon`` x the mean of the ``benign`` weights' updates: its inner product with the true mean is negative."""
    mean = _mean_update(start, benign)
    return weights_from(start, [-epsilon * m for m in mean])


def lie_z(num_clients: int, num_attackers: int) -> float:
    """Baruch et al.'s z_max: the largest shift that keeps the attackers inside the majority's spread.

    ``s = floor(n/2 + 1) - m`` honest clients must be "further" from the mean
    than the attackers for a majority to back them; ``z = Phi^-1((n - s) / n)``.
    """
    supporters = math.floor(num_clients / 2 + 1) - num_attackers
    share = min(max((num_clients - supporters) / num_clients, 0.5), 0.999)
    return NormalDist().inv_cdf(share)


def little_is_enough(start: NDArrays, benign: Sequence[NDArrays], z: float) -> NDArrays:
    """Each coordinate of the benign mean update shifted by ``-z`` of its standard deviation."""
    updates = [update_of(weights, start) for weights in benign]
    stacked = [np.stack(layer) for layer in zip(*updates)]
    return weights_from(start, [layer.mean(axis=0) - z * layer.std(axis=0) for layer in stacked])


def _mean_update(start: NDArrays, benign: Sequence[NDArrays]) -> NDArrays:
    updates = [update_of(weights, start) for weights in benign]
    return [np.mean(np.stack(layer), axis=0) for layer in zip(*updates)]
