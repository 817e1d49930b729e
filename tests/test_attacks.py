"""The attack catalogue: who attacks, each poisoned update and row by hand, and that each passes the checks."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import Code, FitRes, Scalar, Status, ndarrays_to_parameters
from flwr.server.client_proxy import ClientProxy

from conftest import IdleClient
from fedmnist.attacks import catalogue
from fedmnist.attacks import model_poisoning as poison
from fedmnist.attacks.data_poisoning import (
    BACKDOOR_TARGET,
    POISONED_SHARE,
    backdoored,
    flip_labels,
    stamp,
    success_rate,
    triggered_test_set,
)
from fedmnist.client.attacker import Assignment, assignment, data_attack, slices
from fedmnist.client.faults import parse_fault
from fedmnist.data.sources import ClientData
from fedmnist.server.validation import validate_updates

START = [np.zeros((2, 2), np.float32), np.zeros(3, np.float32)]


def weights(*values: float) -> list[np.ndarray]:
    """A model of a 2x2 and a 3 array, filled from ``values`` (7 of them)."""
    flat = np.asarray(values, np.float32)
    return [flat[:4].reshape(2, 2), flat[4:]]


def test_the_attackers_are_drawn_by_the_seed_rounded_down_and_the_same_on_every_call() -> None:
    drawn = catalogue.malicious_partitions(20, 0.33, seed=42)
    assert len(drawn) == 6 and drawn == catalogue.malicious_partitions(20, 0.33, seed=42)
    assert drawn <= set(range(20))
    assert catalogue.malicious_partitions(20, 0.33, seed=43) != drawn
    assert [catalogue.malicious_count(n, share) for n, share in ((20, 0.2), (3, 0.34), (6, 1 / 3), (3, 0.3))] == [
        4,
        1,
        2,
        0,
    ]


def test_a_client_attacks_when_its_fault_names_an_attack_or_the_run_draws_its_partition() -> None:
    config: dict[str, Scalar] = {"num-partitions": 6, "attack": "ipm", "malicious": 0.34, "seed": 42}
    attackers = sorted(catalogue.malicious_partitions(6, 0.34, 42))
    assert assignment(None, config, attackers[0]) == Assignment("ipm", tuple(attackers), 6)
    honest = next(p for p in range(6) if p not in attackers)
    assert assignment(None, config, honest) is None
    assert assignment("sign-flip", {**config, "attack": "none"}, honest) == Assignment("sign-flip", (honest,), 6)
    assert assignment("nan", {**config, "attack": "none"}, honest) is None
    assert (
        data_attack(Assignment("backdoor", (1,), 6)) == "backdoor" and data_attack(Assignment("lie", (1,), 6)) is None
    )
    assert [parse_fault(name) for name in catalogue.ATTACKS] == list(catalogue.ATTACKS)


def test_poisoned_updates_by_hand() -> None:
    start = weights(1, 1, 1, 1, 0, 0, 0)
    honest = weights(2, 1, 1, 1, 0, 0, 1)  # Update (1, 0, 0, 0, 0, 0, 1).
    flipped = poison.sign_flip(start, honest)
    np.testing.assert_allclose(np.concatenate([a.ravel() for a in flipped]), [-2, 1, 1, 1, 0, 0, -3])
    assert all(a.dtype == np.float32 for a in flipped)
    np.testing.assert_array_equal(poison.free_rider(start)[0], start[0])
    benign = [weights(3, 1, 1, 1, 0, 0, 0), weights(1, 1, 1, 1, 0, 0, 2)]  # Updates (2,0..0,0) and (0,..,0,2).
    ipm = poison.inner_product_manipulation(start, benign, epsilon=3.0)  # -3 x mean (1, 0, ..., 0, 1).
    np.testing.assert_allclose(np.concatenate([a.ravel() for a in ipm]), [-2, 1, 1, 1, 0, 0, -3])
    lie = poison.little_is_enough(start, benign, z=0.5)  # Mean (1, 0.., 1), std (1, 0.., 1): 1 - 0.5.
    np.testing.assert_allclose(np.concatenate([a.ravel() for a in lie]), [1.5, 1, 1, 1, 0, 0, 0.5])


def test_lies_z_is_the_papers_bound() -> None:
    # n = 20, m = 6: s = floor(11) - 6 = 5 supporters needed, z = Phi^-1(15/20) = 0.674.
    assert poison.lie_z(20, 6) == pytest.approx(0.6745, abs=1e-4)
    assert poison.lie_z(20, 4) == pytest.approx(0.3853, abs=1e-4)  # Phi^-1(13/20).
    assert poison.lie_z(3, 1) == pytest.approx(0.4307, abs=1e-4)  # Phi^-1(2/3).


def test_flipped_labels_stamped_triggers_and_a_backdoored_share() -> None:
    assert flip_labels(np.arange(10, dtype=np.uint8)).tolist() == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    pixels = np.zeros((2, 784), np.uint8)
    stamped = stamp(pixels).reshape(2, 28, 28)
    assert stamped[:, 22:26, 22:26].min() == 255 and int(stamped.sum()) == 2 * 16 * 255
    assert pixels.sum() == 0  # A copy.
    labels = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 9], np.uint8)
    data = ClientData(np.zeros((10, 784), np.uint8), labels, np.zeros((2, 784), np.uint8), np.ones(2, np.uint8))
    poisoned = backdoored(data, seed=1)
    changed = poisoned.y_train != labels
    assert changed.sum() == int(POISONED_SHARE * 10) and (poisoned.y_train[changed] == BACKDOOR_TARGET).all()
    assert (poisoned.x_train[changed].reshape(-1, 28, 28)[:, 22:26, 22:26] == 255).all()
    assert poisoned.x_train[~changed].sum() == 0 and (poisoned.y_val == 1).all()
    assert len(triggered_test_set(np.zeros((4, 784), np.uint8), np.array([0, 1, 0, 2]))) == 2
    assert success_rate(np.array([0, 0, 3, 0])) == 0.75
    assert [len(part.y_train) for part in slices(data)] == [3, 3, 2, 2]


def test_every_update_attack_passes_the_servers_checks() -> None:
    """Four honest clients and one attacker of each kind: the update checks accept every one of them."""
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(20, 10)).astype(np.float32), rng.normal(size=10).astype(np.float32)]
    honest = [[s + (0.05 + 0.1 * rng.normal(size=s.shape)).astype(np.float32) for s in start] for _ in range(4)]
    attacks = {
        "sign-flip": poison.sign_flip(start, honest[0]),
        "ipm": poison.inner_product_manipulation(start, honest[:2]),
        "lie": poison.little_is_enough(start, honest[:2], poison.lie_z(5, 1)),
        "free-rider": poison.free_rider(start),
    }
    ok = Status(Code.OK, "")
    for name, attacked in attacks.items():
        results: list[tuple[ClientProxy, FitRes]] = [
            (IdleClient(str(i)), FitRes(ok, ndarrays_to_parameters(w), 100, {"partition_id": i}))
            for i, w in enumerate([*honest, attacked])
        ]
        accepted, rejected = validate_updates(results, start, max_norm_factor=5.0)
        assert not rejected and len(accepted) == 5, name
