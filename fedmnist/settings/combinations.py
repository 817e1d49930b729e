"""Which settings go together: one-line reasons a combination cannot run, checked before anything starts.

``server.py`` and ``./run.sh`` check their flags with these
(``fedmnist.settings.server_settings.check_setting_arguments``), and a run
checks its settings again (a ServerApp's run config was not a flag). Light:
no Flower or TensorFlow import.
"""

from __future__ import annotations

from typing import Any

from fedmnist.settings import defaults
from fedmnist.settings.robustness import attack_problem

__all__ = ["attack_problem", "dp_problem", "resolved_strategy", "secagg_problem"]


def resolved_strategy(settings: Any) -> str:
    """The strategy a run uses: its ``strategy``, or for ``auto`` FedAvg under SecAgg+ or DP, else the robust one."""
    if settings.strategy != defaults.AUTO_STRATEGY:
        return str(settings.strategy)
    plain = settings.secagg or settings.dp_noise is not None
    return defaults.PLAIN_MEAN_STRATEGY if plain else defaults.ROBUST_STRATEGY


def dp_problem(settings: Any) -> str:
    """Why the differential privacy settings cannot run together, or "" when they can (flags or run config)."""
    if (settings.dp_noise is None) != (settings.dp_clip is None):
        return "--dp-noise and --dp-clip go together: differential privacy needs both"
    if settings.dp_max_epsilon is not None and settings.dp_noise is None:
        return "--dp-max-epsilon needs --dp-noise and --dp-clip"
    if settings.dp_noise is not None and settings.strategy not in defaults.DP_STRATEGIES:
        return (
            f"--dp-noise needs --strategy {' or '.join(defaults.DP_STRATEGIES)}: the privacy accounting holds "
            f"for a plain mean of clipped updates, which {settings.strategy} is not (docs/privacy.md)"
        )
    return ""


def secagg_problem(settings: Any) -> str:
    """Why the secure aggregation settings cannot run, or "" when they can (flags or run config)."""
    if not settings.secagg:
        return ""
    if settings.runtime == "classic":
        return "--secagg needs --runtime simulation or deployment: the classic pair has no SecAgg+ workflow"
    if not 2 <= settings.secagg_threshold < settings.secagg_shares:
        return (
            f"--secagg-threshold ({settings.secagg_threshold}) must be at least 2 and less than --secagg-shares "
            f"({settings.secagg_shares})"
        )
    trained = max(1, round(settings.fraction_fit * settings.clients))
    if settings.secagg_shares > trained:
        return (
            f"--secagg-shares ({settings.secagg_shares}) cannot be more than the clients trained per round "
            f"({trained}: --fraction-fit x --clients)"
        )
    if settings.dp_noise is not None and settings.dp_side != "client":
        return "--secagg with --dp-noise needs --dp-side client: under SecAgg+ the server never sees an update to clip"
    return ""
