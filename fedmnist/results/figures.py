"""What every plot of a run shares: matplotlib without a display, the run's one-line title, atomic saving."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # Files only; no display needed.
import matplotlib.pyplot as plt

from fedmnist.common.atomic import atomic_path
from fedmnist.results.records import Summary

_SOURCE_NAMES = {"mnist-5k": "mnist-5k (offline 5,000-image subset)", "openml": "OpenML mnist_784"}


def save_figure(figure: Any, path: Path) -> Path:
    """Write ``figure`` to ``path`` as a PNG, whole or not at all, and free it."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path


def warm_up() -> None:
    """Draw a small figure nobody sees: a process's first figure costs tens of ms more than the next ones."""
    figure, axes = plt.subplots(figsize=(3, 2), dpi=50)
    axes.plot([0, 1], [0, 1], "o-", label="warm-up")
    axes.bar([0, 1], [1, 2])
    axes.text(0.5, 0.5, "0.5")
    axes.set_title("warm-up")
    axes.legend()
    figure.tight_layout()
    figure.savefig(io.BytesIO(), format="png")
    plt.close(figure)


def describe_run(summary: Summary) -> str:
    """One line for plot titles: strategy, clients, rounds, data source, seed."""
    run = summary.get("config", {})
    if not run:
        return "settings unknown (no history JSON beside the pickle)"
    source = summary.get("data_source", "?")
    rounds = run.get("rounds")
    return (
        f"{run.get('strategy', 'fedavg')}, {run.get('clients')} clients, {rounds} round{'' if rounds == 1 else 's'}, "
        f"{run.get('partition', 'iid')} partition, "
        f"data: {_SOURCE_NAMES.get(source, source)}, seed {run.get('seed')}"
    )
