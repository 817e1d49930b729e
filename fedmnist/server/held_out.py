"""The server's own evaluation: the global model on its held-out rows, each round, with the run's Trainer.

The Trainer is built in a thread (TensorFlow's import takes seconds), so ``HeldOutEvaluator`` holds it
as a future and waits for it the first time only.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from flwr.common import NDArrays

from fedmnist.attacks.data_poisoning import success_rate, triggered_test_set
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
    With ``backdoor``, it also measures a backdoor's success on the stamped
    held-out images of the other classes (``extra_metrics``: ``backdoor_success``).
    """

    def __init__(self, trainer: Future[Trainer], data: MnistData, *, backdoor: bool = False) -> None:
        self.trainer = trainer
        self.triggered = to_float(triggered_test_set(data.x_test, data.y_test)) if backdoor else None
        self.backdoor_success: float | None = None
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
        if self.triggered is not None:
            self.backdoor_success = success_rate(model.predict(self.triggered).argmax(axis=1))
        return result.loss, result.accuracy

    def extra_metrics(self) -> dict[str, float]:
        """Held-out numbers beside loss and accuracy: the backdoor's success rate when it is measured."""
        return {} if self.backdoor_success is None else {"backdoor_success": self.backdoor_success}
