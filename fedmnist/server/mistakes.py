"""What the global model gets wrong on the server's held-out set: a confusion matrix and the worst mistakes.

Both come from the probabilities of the server's own held-out evaluation
(``Trainer.evaluate_with_probabilities``, the same forward pass), so every
round can afford them: about 1 ms a round here on 1,000 rows (docs/outputs.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedmnist.settings import defaults

MISTAKES_SHOWN = 24  # Misclassified digits kept for the picture: three rows of eight.


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> list[list[int]]:
    """Counts of (true digit, predicted digit), as nested lists: row = true, column = predicted.

    ``labels [0, 1, 1]`` with ``predicted [0, 1, 0]`` put one in [0][0], one in
    [1][1] and one in [1][0].
    """
    counts = np.bincount(
        labels.astype(np.int64) * defaults.NUM_CLASSES + predicted.astype(np.int64), minlength=defaults.NUM_CLASSES**2
    )
    return counts.reshape(defaults.NUM_CLASSES, defaults.NUM_CLASSES).tolist()


def worst_mistakes(labels: np.ndarray, probabilities: np.ndarray, count: int = MISTAKES_SHOWN) -> list[dict[str, Any]]:
    """The ``count`` misclassified rows the model was surest of: index, true, predicted, confidence."""
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    return [
        {"index": int(i), "true": int(labels[i]), "predicted": int(predicted[i]), "confidence": float(confidence[i])}
        for i in worst
    ]
