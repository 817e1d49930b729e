"""The server's own evaluation: the global model on its held-out rows, each round, with the run's Trainer.

The Trainer is built in a thread (TensorFlow's import takes seconds), so ``HeldOutEvaluator`` holds it
as a future and waits for it the first time only.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from flwr.common import NDArrays

from fedmnist.data.sources import MnistData, to_float
from fedmnist.server.mistakes import confusion_matrix, worst_mistakes

if TYPE_CHECKING:
    from fedmnist.model.keras_model import Trainer


def build_trainer(seed: int, model: str, after: Future[None] | None = None) -> Trainer:
    """The server's Trainer of ``model`` (TensorFlow's import: seconds), once ``after`` is done if given."""
    if after is not None:
        after.exception()  # Waits; an error there is the federation step's to raise.
    from fedmnist.model.keras_model import Trainer, build_model

    return Trainer(build_model(seed, model), seed=seed)


class HeldOutEvaluator:
    """The global model on the server's held-out rows: ``weights -> (loss, accuracy)`` for Flower.

    Each call also keeps, from the same pass, the confusion matrix (``confusion``,
    which the round's record carries) and the misclassified rows the model was
    surest of (``mistakes``, with their pixels: the dashboard draws them).
    """

    def __init__(self, trainer: Future[Trainer], data: MnistData) -> None:
        self.trainer = trainer
        self.pixels = data.x_test  # uint8, for pictures of the mistakes.
        self.x_test, self.y_test = to_float(data.x_test), data.y_test.astype("int32")
        self.confusion: list[list[int]] | None = None
        self.mistakes: list[dict[str, Any]] = []

    def __call__(self, weights: NDArrays) -> tuple[float, float]:
        model = self.trainer.result()  # Waits for the TensorFlow import, the first time only.
        model.set_weights(weights)
        result, probabilities = model.evaluate_with_probabilities(self.x_test, self.y_test)
        self.confusion = confusion_matrix(self.y_test, probabilities.argmax(axis=1))
        self.mistakes = [
            {**mistake, "pixels": self.pixels[mistake["index"]].tolist()}
            for mistake in worst_mistakes(self.y_test, probabilities)
        ]
        return result.loss, result.accuracy
