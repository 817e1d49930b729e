"""A client that attacks: which attack it runs, its poisoned rows, and the update it sends instead.

A client attacks when told to alone (``client.py --fault lie``, a SuperNode's
``fault`` node config) or when the run makes its partition one of the
attackers (``--malicious 0.2 --attack lie``: the server's config says so with
every round, ``fedmnist.attacks.catalogue.malicious_partitions`` says who).
Colluding attackers (``ipm``, ``lie``) share their honest updates: a run's
colluders are known partitions whose training is reproducible, so each
attacker recomputes the others' honest updates from their rows here, which is
what they would have sent each other (``Collusion`` keeps them per round, so a
process that plays several attackers trains each once). A lone attacker's
"colluders" are four slices of its own rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from flwr.common import NDArrays, Scalar

from fedmnist.attacks import catalogue
from fedmnist.attacks import model_poisoning as poison
from fedmnist.attacks.data_poisoning import backdoored, label_flipped
from fedmnist.data.sources import ClientData

if TYPE_CHECKING:
    from fedmnist.model.keras_model import Trainer

T = TypeVar("T")
LONE_SLICES = 4  # A lone colluding attacker estimates the honest spread from this many slices of its rows.


@dataclass(frozen=True)
class Assignment:
    """The attack a client runs in a run, and the partitions it colludes with (itself included)."""

    attack: str
    colluders: tuple[int, ...]
    num_clients: int


def assignment(fault: str | None, config: dict[str, Scalar], partition_id: int) -> Assignment | None:
    """This client's attack: its own ``fault`` if that names one, else the run's if its partition attacks."""
    num_clients = int(config["num-partitions"])
    if fault in catalogue.ATTACKS:
        return Assignment(fault, (partition_id,), num_clients)
    attack = str(config.get("attack", catalogue.NONE))
    if attack == catalogue.NONE:
        return None
    attackers = catalogue.malicious_partitions(num_clients, float(config["malicious"]), int(config["seed"]))
    return Assignment(attack, tuple(sorted(attackers)), num_clients) if partition_id in attackers else None


def data_attack(attack: Assignment | None) -> str | None:
    """The data-poisoning attack of an assignment, if it is one (the rows the client trains on depend on it)."""
    if attack is not None and catalogue.ATTACKS[attack.attack].poisons == "data":
        return attack.attack
    return None


def poisoned_rows(attack: str | None, data: ClientData, seed: int) -> ClientData:
    """The rows a data-poisoning attacker trains on (its own rows for any other client)."""
    if attack == catalogue.LABEL_FLIP:
        return label_flipped(data)
    if attack == catalogue.BACKDOOR:
        return backdoored(data, seed)
    return data


class Collusion:
    """The honest updates a process's colluding attackers share, for the latest round only."""

    def __init__(self) -> None:
        self._round: tuple[object, ...] = ()
        self._updates: list[NDArrays] = []

    def honest_updates(self, key: tuple[object, ...], train: Callable[[], list[NDArrays]]) -> list[NDArrays]:
        """The colluders' honest weights for ``key`` (run, round, colluders), trained by ``train`` once."""
        if key != self._round:
            self._updates, self._round = train(), key
        return self._updates


def slices(data: ClientData, count: int = LONE_SLICES) -> list[ClientData]:
    """``count`` interleaved slices of ``data``'s training rows (a lone attacker's stand-in colluders)."""
    return [ClientData(data.x_train[i::count], data.y_train[i::count], data.x_val, data.y_val) for i in range(count)]


def train_each(
    trainer: Trainer, runs: Sequence[tuple[T, Sequence[int]]], train: Callable[[T], NDArrays]
) -> list[NDArrays]:
    """Each run's honest weights (``train(client)`` after a fresh Adam and its seed); the trainer's Adam kept."""
    kept = trainer.optimizer_state()
    trained = []
    for client, seed in runs:
        trainer.reset_optimizer()
        trainer.reseed(seed)
        trained.append(train(client))
    trainer.set_optimizer_state(kept)
    return trained


def poisoned_update(
    attack: Assignment, start: NDArrays, honest: NDArrays, colluders_honest: Callable[[], list[NDArrays]]
) -> NDArrays:
    """The weights an update-poisoning attacker sends (``honest`` for a data-poisoning one)."""
    name = attack.attack
    if name == catalogue.SIGN_FLIP:
        return poison.sign_flip(start, honest)
    if name == catalogue.FREE_RIDER:
        return poison.free_rider(start)
    if name == catalogue.IPM:
        return poison.inner_product_manipulation(start, colluders_honest())
    if name == catalogue.LIE:
        z = poison.lie_z(attack.num_clients, len(attack.colluders))
        return poison.little_is_enough(start, colluders_honest(), z)
    return honest
