"""What a reader needs to know of a run (the dashboard's Config card): the settings that made its numbers.

Paths, ports and timeouts are the rest, folded away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from fedmnist.settings.server_settings import ServerSettings

_ALWAYS_SHOWN = (
    "strategy",
    "model",
    "dataset",
    "partition",
    "rounds",
    "clients",
    "min_clients",
    "local_epochs",
    "batch_size",
    "learning_rate",
    "seed",
)
_SHOWN_WHEN_SET = (
    "fraction_fit",
    "fraction_evaluate",
    "runtime",
    "max_update_norm_factor",
    "keep_optimizer",
    "baseline",
    "dp_noise",
    "secagg",
)  # Shown when not the default.
_SHOWN_WITH: dict[str, Callable[[ServerSettings], bool]] = {  # Only these runs use them.
    "proximal_mu": lambda run: run.strategy == "fedprox",
    "server_momentum": lambda run: run.strategy == "fedavgm",
    "server_learning_rate": lambda run: run.strategy == "fedavgm",
    **dict.fromkeys(("dp_clip", "dp_side", "dp_delta", "dp_max_epsilon"), lambda run: run.dp_noise is not None),
    **dict.fromkeys(("secagg_shares", "secagg_threshold"), lambda run: run.secagg),
}


def shaping_settings(run: ServerSettings) -> dict[str, Any]:
    """The settings that shaped ``run``, in a reader's order; ``min_clients`` as the number it came to."""
    defaults = ServerSettings()
    optional = [f.name for f in fields(ServerSettings) if f.name in _SHOWN_WHEN_SET or f.name in _SHOWN_WITH]
    shown: dict[str, Any] = {}
    for name in (*_ALWAYS_SHOWN, *optional):
        value = getattr(run, name)
        if name in _SHOWN_WHEN_SET and value == getattr(defaults, name):
            continue
        if name in _SHOWN_WITH and (value is None or not _SHOWN_WITH[name](run)):
            continue
        shown[name] = value
    shown["min_clients"] = run.minimum_clients if run.min_clients else f"{run.minimum_clients} (all but one)"
    return shown
