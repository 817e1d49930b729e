"""What each robust aggregation assumes: how many attackers per round it withstands among n clients.

Light on purpose (no Flower import): ``server.py`` and ``./run.sh`` check
``--assumed-attackers`` against these rules before anything starts, and
``fedmnist.server.defences`` configures the aggregation from the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedmnist.attacks.catalogue import NONE, malicious_count
from fedmnist.settings import defaults


@dataclass(frozen=True)
class Assumption:
    """A rule's bound: ``most(n)`` attackers among ``n`` clients at most; ``rule`` says it as the paper does."""

    most: Callable[[int], int]
    rule: str


ASSUMPTIONS: dict[str, Assumption] = {
    "fedmedian": Assumption(lambda n: (n - 1) // 2, "a majority honest: f < n/2"),
    "fedtrimmedavg": Assumption(lambda n: (n - 1) // 2, "f < n/2 (it cuts f/n of each side; 20% unless set)"),
    "krum": Assumption(lambda n: max(0, (n - 3) // 2), "n >= 2f + 3"),
    "multikrum": Assumption(lambda n: max(0, (n - 3) // 2), "n >= 2f + 3 (it averages the n - f best)"),
    "bulyan": Assumption(lambda n: max(0, (n - 3) // 4), "n >= 4f + 3"),
    "normclip": Assumption(lambda n: (n - 1) // 2, "f < n/2 (the median norm is an honest client's)"),
    "centeredclip": Assumption(lambda n: (n - 1) // 2, "f < n/2"),
}


def trained_per_round(settings: Any) -> int:
    """The clients a round trains: ``--fraction-fit`` x ``--clients``, at least one."""
    return max(1, round(settings.fraction_fit * settings.clients))


def assumed_attackers(settings: Any) -> int:
    """The attackers per round the run's aggregation is set for: ``--assumed-attackers``, else the most it allows."""
    assumption = ASSUMPTIONS.get(settings.strategy)
    if assumption is None:
        return 0
    if settings.assumed_attackers is not None:
        return int(settings.assumed_attackers)
    trained = trained_per_round(settings)
    if settings.strategy == "fedtrimmedavg":  # Its default cut, not the most it could cut.
        return math.floor(defaults.TRIMMED_BETA * trained)
    return assumption.most(trained)


def attack_problem(settings: Any) -> str:
    """Why the attack and defence settings cannot run, or "" when they can (flags or run config)."""
    attacking = settings.attack != NONE
    if attacking != (settings.malicious > 0):
        return "--attack and --malicious go together: which attack, and the share of the clients that run it"
    if attacking and malicious_count(settings.clients, settings.malicious) == 0:
        return f"--malicious {settings.malicious:g} of {settings.clients} clients is no client; raise it"
    assumption = ASSUMPTIONS.get(settings.strategy)
    if assumption is not None and settings.secagg:
        return f"--secagg shows the server only the sum of the updates: {settings.strategy} needs each one"
    if settings.assumed_attackers is None:
        return ""
    if assumption is None:
        return f"--assumed-attackers is for a robust strategy ({', '.join(ASSUMPTIONS)}), not {settings.strategy}"
    trained = trained_per_round(settings)
    if settings.assumed_attackers > assumption.most(trained):
        return (
            f"{settings.strategy} cannot withstand {settings.assumed_attackers} attackers among the {trained} "
            f"clients trained per round: it needs {assumption.rule}"
        )
    return ""
