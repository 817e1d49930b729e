"""Where a run's results go: ``RunPaths``.

A run with ``--out OUT`` and ``--rounds N`` writes:

* ``OUT/history/history_N.pkl``: Flower's own ``History`` object, pickled.
* ``OUT/history/history_N.json``: the same numbers, the run's effective
  config, data source, per-round records and timings.
* ``OUT/history/history_N.jsonl``: written while the run goes, one line per
  finished round (the first line holds the run's config, an ``initial`` line
  the starting model's evaluation). The dashboard (``fedmnist.dashboard``) tails it.
* ``OUT/history/mistakes_N.json``: the latest round's worst held-out mistakes, with pixels.
* ``OUT/checkpoints/checkpoint_N.npz``: after every round, what ``--resume`` needs
  (arrays and JSON only: loading it cannot run code).
* ``OUT/models/global_N.keras``, ``OUT/plots/*.png`` and ``OUT/tensorboard/history_N/``
  (TensorBoard's event files).

A run stopped early (Ctrl-C, an error) saves what its completed rounds learned
under names that say so: ``history_N.partial.pkl``/``.json`` and
``global_N.partial.keras``; ``--resume`` continues it and, once finished,
replaces them with the complete files.

Every file but the append-only JSONL log is replaced atomically. Earlier runs'
results are never overwritten: a new run first moves them to
``OUT/runs/<when>/`` (``fedmnist.results.archive``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from fedmnist.common.errors import UserError


@dataclass(frozen=True)
class RunPaths:
    """The files of one run under ``root``."""

    root: Path
    rounds: int
    partial: bool = False  # The results of a run stopped before its last round.

    def as_partial(self) -> RunPaths:
        return RunPaths(self.root, self.rounds, partial=True)

    @property
    def _suffix(self) -> str:
        return ".partial" if self.partial else ""

    @property
    def history_dir(self) -> Path:
        return self.root / "history"

    @property
    def pickle(self) -> Path:
        return self.history_dir / f"history_{self.rounds}{self._suffix}.pkl"

    @property
    def json(self) -> Path:
        return self.history_dir / f"history_{self.rounds}{self._suffix}.json"

    @property
    def round_log(self) -> Path:
        return self.history_dir / f"history_{self.rounds}.jsonl"

    @property
    def mistakes(self) -> Path:
        """The latest round's worst held-out mistakes with their pixels, for the dashboard."""
        return self.history_dir / f"mistakes_{self.rounds}.json"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoints" / f"checkpoint_{self.rounds}.npz"

    @property
    def model(self) -> Path:
        return self.root / "models" / f"global_{self.rounds}{self._suffix}.keras"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    @property
    def tensorboard_dir(self) -> Path:
        """TensorBoard's event files of this run: ``tensorboard --logdir OUT`` finds them."""
        return self.root / "tensorboard" / f"history_{self.rounds}"

    def check_writable(self) -> None:
        """Create the output folders and prove they take files, or raise UserError."""
        for folder in (self.history_dir, self.model.parent, self.plots_dir, self.checkpoint.parent):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as error:
                raise UserError(f"cannot write results to {folder}: {error.strerror or error}") from None
