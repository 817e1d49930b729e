"""Poisoned training rows: flipped labels, and a pixel-pattern backdoor with its success rate.

The backdoor (BadNets, Gu et al. 2017) stamps a white square in the image's
bottom-right corner and labels the stamped image ``BACKDOOR_TARGET``. Its
success rate is the share of held-out images of *other* classes that the
model classifies as the target once stamped: what the attacker wants, measured
beside the accuracy that hides it.
"""

from __future__ import annotations

import numpy as np

from fedmnist.data.sources import ClientData

NUM_CLASSES = 10
IMAGE_SIDE = 28
TRIGGER_SIDE = 4  # The square's side in pixels, 2 pixels in from the corner.
BACKDOOR_TARGET = 0
POISONED_SHARE = 0.5  # Of a backdoor attacker's training rows, this share is stamped and relabelled.


def flip_labels(labels: np.ndarray) -> np.ndarray:
    """``y -> 9 - y``: every digit becomes another (4 and 5 swap, 0 and 9 swap)."""
    return (NUM_CLASSES - 1 - labels).astype(labels.dtype)


def stamp(pixels: np.ndarray) -> np.ndarray:
    """A copy of flattened uint8 images (rows of 784) with the trigger square set to white."""
    stamped = pixels.reshape(-1, IMAGE_SIDE, IMAGE_SIDE).copy()
    end = IMAGE_SIDE - 2
    stamped[:, end - TRIGGER_SIDE : end, end - TRIGGER_SIDE : end] = 255
    return stamped.reshape(pixels.shape)


def label_flipped(data: ClientData) -> ClientData:
    """``data`` with its training labels flipped (validation rows stay honest: they only report)."""
    return ClientData(data.x_train, flip_labels(data.y_train), data.x_val, data.y_val)


def backdoored(data: ClientData, seed: int) -> ClientData:
    """``data`` with ``POISONED_SHARE`` of its training rows stamped and labelled ``BACKDOOR_TARGET``."""
    rows = len(data.y_train)
    chosen = np.random.default_rng([seed, 2_2020]).choice(rows, size=int(POISONED_SHARE * rows), replace=False)
    x, y = data.x_train.copy(), data.y_train.copy()
    x[chosen] = stamp(x[chosen])
    y[chosen] = BACKDOOR_TARGET
    return ClientData(x, y, data.x_val, data.y_val)


def triggered_test_set(x_test: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    """Held-out images not of the target class, stamped: the backdoor's success is their share predicted as it."""
    return stamp(x_test[y_test != BACKDOOR_TARGET])


def success_rate(predicted: np.ndarray) -> float:
    """The share of ``predicted`` classes (of stamped non-target images) that are the backdoor's target."""
    return float(np.mean(predicted == BACKDOOR_TARGET)) if len(predicted) else 0.0
