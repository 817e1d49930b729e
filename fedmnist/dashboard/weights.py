"""A run's latest global model: as JSON arrays, or as a ``.keras`` file.

The server checkpoints the global weights after every round (``fedmnist.results.checkpoint``,
arrays and JSON: reading it cannot run code); that checkpoint is the source here. When the run has ended, its final
``models/global_N.keras`` holds the same weights and is served as it is; while
it runs, a ``.keras`` file is built from the checkpoint (which imports
TensorFlow into the dashboard once, a few seconds, on the first such download).
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmnist.dashboard.runs import Run, finite
from fedmnist.dashboard.schemas import ModelWeights, Tensor


class NoWeights(LookupError):
    """The run has no checkpoint yet (no round finished), or it cannot be read."""


@dataclass(frozen=True)
class LatestWeights:
    round: int
    model: str | None
    weights: list[np.ndarray]

    def document(self, run_id: str) -> ModelWeights:
        return ModelWeights(
            run_id=run_id,
            round=self.round,
            model=self.model,
            tensors=[
                Tensor(shape=list(array.shape), dtype=str(array.dtype), values=_values(array)) for array in self.weights
            ],
        )


def _values(array: np.ndarray) -> list:
    """Nested lists of the array's numbers; NaN and infinities (a diverged model) become null."""
    values = array.tolist()
    return values if np.isfinite(array).all() else finite(values)


def latest_weights(run: Run) -> LatestWeights:
    """The weights after the run's latest finished round, from its checkpoint (arrays and JSON, no pickle)."""
    from fedmnist.results.checkpoint import read_checkpoint  # Imports Flower: only when weights are asked for.

    path = run.paths.checkpoint
    if not run.contains(path):
        raise NoWeights(f"run {run.id!r} has no weights yet: the server saves them after each round")
    try:
        checkpoint = read_checkpoint(path)
    except FileNotFoundError:
        raise NoWeights(f"run {run.id!r} has no weights yet: the server saves them after each round") from None
    except (OSError, ValueError) as error:
        raise NoWeights(f"cannot read the checkpoint of run {run.id!r}: {error}") from None
    return LatestWeights(round=checkpoint.round, model=checkpoint.config.get("model"), weights=checkpoint.weights)


class KerasFiles:
    """``.keras`` files of the latest weights: the run's own final model, or one built here."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="fedmnist-dashboard-")
        self._lock = threading.Lock()  # One TensorFlow build at a time.

    def path(self, run: Run) -> tuple[Path, int]:
        """A ``.keras`` file of the run's latest weights and the round they are from (blocks while building)."""
        final, checkpoint = run.paths.model, run.paths.checkpoint
        latest = latest_weights(run)
        if run.contains(final) and final.stat().st_mtime >= checkpoint.stat().st_mtime:
            return final, latest.round  # Saved after the last checkpoint: the run's final weights.
        target = Path(self._folder.name) / f"{run.id.replace('/', '--')}-round{latest.round}.keras"
        with self._lock:
            if not target.exists():
                _build_keras_file(latest, target)
        return target, latest.round

    def close(self) -> None:
        self._folder.cleanup()


def _build_keras_file(latest: LatestWeights, target: Path) -> None:
    from fedmnist.model.keras_model import build_model, save_model
    from fedmnist.settings import defaults

    model = build_model(0, latest.model or defaults.MODEL)  # The seed only sets weights we replace.
    model.set_weights(latest.weights)
    save_model(model, str(target))
