"""Where a run's results go: ``RunPaths``.

A run with ``--out OUT`` and ``--rounds N`` writes:

* ``OUT/history/history_N.pkl``: Flower's own ``History`` object, pickled.
* ``OUT/history/history_N.json``: the same numbers, the run's effective
  config, data source, per-round records and timings.
* ``OUT/history/history_N.jsonl``: written while the run goes, one line per
  finished round (the first line holds the run's config, an ``initial`` line
  the starting model's evaluation); the log of the run before is kept as
  ``history_N.previous.jsonl``. The dashboard (``fedmnist.dashboard``) tails it.
* ``OUT/checkpoints/checkpoint_N.pkl``: after every round, what ``--resume`` needs.
* ``OUT/models/global_N.keras`` and ``OUT/plots/*.png``.

Every file but the append-only JSONL log is replaced atomically.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from fedmnist.errors import UserError


@dataclass(frozen=True)
class RunPaths:
    """The files of one run under ``root``."""

    root: Path
    rounds: int

    @property
    def history_dir(self) -> Path:
        return self.root / "history"

    @property
    def pickle(self) -> Path:
        return self.history_dir / f"history_{self.rounds}.pkl"

    @property
    def json(self) -> Path:
        return self.history_dir / f"history_{self.rounds}.json"

    @property
    def round_log(self) -> Path:
        return self.history_dir / f"history_{self.rounds}.jsonl"

    @property
    def previous_round_log(self) -> Path:
        return self.history_dir / f"history_{self.rounds}.previous.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoints" / f"checkpoint_{self.rounds}.pkl"

    @property
    def model(self) -> Path:
        return self.root / "models" / f"global_{self.rounds}.keras"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    def check_writable(self) -> None:
        """Create the output folders and prove they take files, or raise UserError."""
        for folder in (self.history_dir, self.model.parent, self.plots_dir, self.checkpoint.parent):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as error:
                raise UserError(f"cannot write results to {folder}: {error.strerror or error}") from None
