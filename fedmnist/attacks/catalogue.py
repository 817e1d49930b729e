"""The attack catalogue: each attack's name, its source, and how it stays inside the server's checks.

The server checks every update (``fedmnist.server.validation``): well-formed,
finite, a plausible example count, and at most ``--max-update-norm-factor``
(5) times the round's median distance from the global model. Every attack
here passes those checks; only the aggregation rule (``fedmnist.server.defences``)
stands between it and the model.

A run's attackers are chosen by its seed (``malicious_partitions``): ``--malicious
0.2 --attack lie`` makes a fifth of the partitions attack, the same ones on every
runtime. A single ``client.py --fault NAME`` or a SuperNode's ``fault`` node config
makes that one client attack instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NONE = "none"
SIGN_FLIP, IPM, LIE, LABEL_FLIP, FREE_RIDER, BACKDOOR = (
    "sign-flip",
    "ipm",
    "lie",
    "label-flip",
    "free-rider",
    "backdoor",
)


@dataclass(frozen=True)
class Attack:
    """One attack: what it does, where it comes from, and why the update checks let it through."""

    poisons: str  # "update": the attacker changes the update it sends; "data": it trains on poisoned rows.
    source: str
    in_bound: str
    colludes: bool = False  # Whether the attackers share their honest updates (``fedmnist.attacks.collusion``).


ATTACKS: dict[str, Attack] = {
    SIGN_FLIP: Attack(
        "update",
        "Damaskinos et al. 2018; Li et al. 2019 (RSA), the sign-flipping Byzantine worker",
        "sends -3 x its honest update: 3 x an honest length, inside the 5 x median bound",
    ),
    IPM: Attack(
        "update",
        "Xie, Koyejo and Gupta 2020, 'Fall of Empires: inner product manipulation'",
        "sends -epsilon x the colluders' mean honest update (epsilon 3): a mean is shorter than its parts, "
        "so 3 x it stays inside the bound",
        colludes=True,
    ),
    LIE: Attack(
        "update",
        "Baruch, Baruch and Goldberg 2019, 'A little is enough'",
        "sends the colluders' mean honest update minus z standard deviations per coordinate, z from the paper's "
        "bound for n clients and m attackers: close to the honest ones by construction",
        colludes=True,
    ),
    LABEL_FLIP: Attack(
        "data",
        "Biggio et al. 2012; Tolpegin et al. 2020, 'Data poisoning attacks against federated learning systems'",
        "trains honestly on its rows with labels y -> 9 - y: a real training update of an honest length",
    ),
    FREE_RIDER: Attack(
        "update",
        "Lin et al. 2019, 'Free-riders in federated learning'; Fraboni et al. 2021",
        "returns the global model unchanged with its plausible example count: distance 0, below any bound",
    ),
    BACKDOOR: Attack(
        "data",
        "Gu et al. 2017 (BadNets); Bagdasaryan et al. 2020, 'How to backdoor federated learning'",
        "trains on its rows with half of them stamped with a 4x4 white square and labelled 0: an honest length, "
        "and the model stays accurate on clean images",
    ),
}
ATTACK_CHOICES = (NONE, *ATTACKS)


def malicious_count(num_partitions: int, fraction: float) -> int:
    """How many of ``num_partitions`` attack at ``fraction``: rounded down (0.33 of 20 is 6, a third of 6 is 2)."""
    return math.floor(fraction * num_partitions + 1e-9)


def malicious_partitions(num_partitions: int, fraction: float, seed: int) -> frozenset[int]:
    """The partitions that attack in a run with ``--malicious fraction``, drawn by the run's seed."""
    import numpy as np  # Here: server.py reads the choices above before it checks its environment has NumPy.

    count = malicious_count(num_partitions, fraction)
    rng = np.random.default_rng([seed, 7_331])  # Its own stream: the partitions' cut uses the seed alone.
    return frozenset(int(p) for p in rng.choice(num_partitions, size=count, replace=False))


def describe(name: str) -> str:
    """One line for the docs and logs: the attack, its source, and how it passes the checks."""
    attack = ATTACKS[name]
    return f"{name}: {attack.in_bound} ({attack.source})"
