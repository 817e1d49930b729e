"""Robust aggregation by hand: clipping, centered clipping, Multi-Krum against Flower's, Bulyan held, refusals."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.strategy.aggregate import aggregate_krum

from conftest import IdleClient
from fedmnist.server.defences import (
    CENTERED_CLIPPING_STEPS,
    CenteredClipping,
    HeldBulyan,
    MultiKrum,
    NormClipping,
    clip_scales,
)
from fedmnist.server.strategies import build_strategy
from fedmnist.server.update_stats import FEW_ROWS, coordinate_median, sorted_columns, update_numbers
from fedmnist.settings.robustness import ASSUMPTIONS, attack_problem
from fedmnist.settings.server_settings import ServerSettings

OK = Status(Code.OK, "")
START = [np.zeros(2, np.float32)]


def results(*points: tuple[float, float], examples: int = 10) -> list:
    return [
        (IdleClient(str(i)), FitRes(OK, ndarrays_to_parameters([np.array(p, np.float32)]), examples, {}))
        for i, p in enumerate(points)
    ]


def aggregate(strategy, *points: tuple[float, float]) -> np.ndarray:
    strategy.configure_fit(1, ndarrays_to_parameters(START), manager(len(points)))
    parameters, _ = strategy.aggregate_fit(1, results(*points), [])
    return parameters_to_ndarrays(parameters)[0]


def manager(clients: int) -> SimpleClientManager:
    found = SimpleClientManager()
    for i in range(clients):
        found.register(IdleClient(str(i)))
    return found


def rule(kind: type, **kwargs):
    return kind(min_fit_clients=1, min_available_clients=1, initial_parameters=ndarrays_to_parameters(START), **kwargs)


def test_clip_scales_hold_each_length_to_the_median() -> None:
    np.testing.assert_allclose(clip_scales([1.0, 2.0, 4.0]), [1.0, 1.0, 0.5])
    np.testing.assert_allclose(clip_scales([0.0, 0.0, 3.0]), [1.0, 1.0, 0.0])


def test_norm_clipping_by_hand() -> None:
    """Updates of length 1, 2 and 10: the last is cut to 2 (the median), then the mean of the three."""
    strategy = rule(NormClipping)
    np.testing.assert_allclose(aggregate(strategy, (1, 0), (0, 2), (10, 0)), [(1 + 0 + 2) / 3, 2 / 3], rtol=1e-6)
    assert strategy.decisions == {"0": "kept", "1": "kept", "2": "clipped x0.2"}


def test_centered_clipping_is_the_mean_when_updates_agree_and_bounds_an_outlier() -> None:
    agree = rule(CenteredClipping)
    np.testing.assert_allclose(aggregate(agree, (1, 1), (1, 1), (1, 1)), [1, 1], rtol=1e-6)
    np.testing.assert_allclose(agree.previous[0], [1, 1])  # The next round starts from here.
    attacked = rule(CenteredClipping)
    step = aggregate(attacked, (1, 0), (1, 0), (1, 0), (-100, 0))
    # Each of 3 steps moves the centre by at most the mean of clipped differences: the attacker drags
    # it by at most tau / 4 per step, tau being the median distance, so it stays near the honest (1, 0).
    assert 0.5 < step[0] <= 1.0 and step[1] == 0
    assert attacked.decisions["3"].startswith("clipped")


def test_multikrum_keeps_the_n_minus_f_best_as_flowers_krum_does_and_says_which() -> None:
    points = [(0, 0), (0.1, 0), (0, 0.1), (0.1, 0.1), (5, 5)]
    strategy = rule(MultiKrum, num_malicious_clients=1)
    found = aggregate(strategy, *points)
    flowers = aggregate_krum([([np.array(p, np.float32)], 10) for p in points], num_malicious=1, to_keep=4)
    np.testing.assert_allclose(found, flowers[0])
    np.testing.assert_allclose(found, [0.05, 0.05], rtol=1e-6)
    assert strategy.decisions == {"0": "kept", "1": "kept", "2": "kept", "3": "kept", "4": "discarded"}


def test_bulyan_lowers_its_f_for_a_round_with_fewer_results(caplog: pytest.LogCaptureFixture) -> None:
    strategy = rule(HeldBulyan, num_malicious_clients=1)
    points = [(0, 0), (0.1, 0), (0, 0.1), (0.1, 0.1), (0.05, 0.05), (0.02, 0.02), (9, 9)]  # 7 = 4 x 1 + 3.
    assert np.abs(aggregate(strategy, *points)).max() < 0.1
    aggregate(strategy, *points[:6])  # 6 < 7: f 0 this round, said once.
    assert "6 updates withstand 0 attackers under Bulyan (n >= 4f + 3), not 1" in caplog.text


def test_the_robust_strategies_take_the_attackers_they_assume() -> None:
    settings = ServerSettings(clients=20, strategy="bulyan")
    assert build_strategy(settings, START).num_malicious_clients == 4  # type: ignore[attr-defined]
    trimmed = ServerSettings(clients=20, strategy="fedtrimmedavg", assumed_attackers=6)
    assert build_strategy(trimmed, START).beta == pytest.approx(0.3)  # type: ignore[attr-defined]
    assert build_strategy(ServerSettings(strategy="fedtrimmedavg"), START).beta == 0.2  # type: ignore[attr-defined]
    assert {name: a.most(20) for name, a in ASSUMPTIONS.items()} == {
        "fedmedian": 9,
        "fedtrimmedavg": 9,
        "krum": 8,
        "multikrum": 8,
        "bulyan": 4,
        "normclip": 9,
        "centeredclip": 9,
    }


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        (
            {"strategy": "bulyan", "clients": 6, "assumed_attackers": 1},
            "bulyan cannot withstand 1 attackers among the 6 clients trained per round: it needs n >= 4f + 3",
        ),
        (
            {"strategy": "krum", "clients": 10, "fraction_fit": 0.5, "assumed_attackers": 2},
            "krum cannot withstand 2 attackers among the 5 clients",
        ),
        ({"attack": "lie"}, "--attack and --malicious go together"),
        ({"malicious": 0.2}, "--attack and --malicious go together"),
        ({"attack": "lie", "malicious": 0.3}, "--malicious 0.3 of 3 clients is no client; raise it"),
        ({"strategy": "fedavg", "assumed_attackers": 1}, "--assumed-attackers is for a robust strategy"),
        (
            {"strategy": "fedmedian", "secagg": True},
            "--secagg shows the server only the sum of the updates: fedmedian needs each one",
        ),
    ],
)
def test_settings_a_defence_cannot_meet_are_refused_in_one_line(changes: dict, said: str) -> None:
    problem = attack_problem(argparse.Namespace(**{**vars_of(ServerSettings()), **changes}))
    assert said in problem and "\n" not in problem


def vars_of(settings: ServerSettings) -> dict:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


def test_the_coordinate_median_by_hand_and_as_numpys() -> None:
    odd = np.array([[1.0, 9.0], [5.0, -2.0], [3.0, 4.0]])
    even = np.array([[1.0, 9.0], [5.0, -2.0], [3.0, 4.0], [0.0, 10.0]])
    assert coordinate_median(odd).tolist() == [3.0, 4.0]
    assert coordinate_median(even).tolist() == [2.0, 6.5]
    for count in (1, 2, 3, 10, FEW_ROWS, FEW_ROWS + 1, 30):  # Both ways of sorting: few rows, many.
        rows = np.random.default_rng(count).normal(size=(count, 1000)).astype(np.float32)
        rows[:, :10] = 0.5  # Ties.
        assert np.array_equal(sorted_columns(rows), np.sort(rows.astype(np.float64), axis=0)), count
        assert np.array_equal(coordinate_median(rows), np.median(rows.astype(np.float64), axis=0)), count


def layer_by_layer_centered_clipping(previous: list, updates: list[list], weights: np.ndarray) -> list:
    """Centered clipping as the paper reads, one layer at a time: what the flat rows must equal, bit for bit."""
    center = previous or [np.zeros_like(layer) for layer in updates[0]]
    for _ in range(CENTERED_CLIPPING_STEPS):
        differences = [[u - c for u, c in zip(update, center)] for update in updates]
        lengths = [float(np.linalg.norm(np.concatenate([np.ravel(d) for d in diff]))) for diff in differences]
        scaled = weights * clip_scales(lengths)
        center = [c + sum(w * d[i] for w, d in zip(scaled, differences)) for i, c in enumerate(center)]
    return center


def test_centered_clipping_gives_the_layer_by_layer_weights_exactly_round_after_round() -> None:
    rng = np.random.default_rng(7)
    shapes = [(6, 4), (4,), (4, 3), (3,)]
    start = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
    strategy = rule(CenteredClipping)
    previous: list = []
    for server_round in (1, 2, 3):
        models = [
            [(s + rng.normal(size=s.shape) * (5 if i == 3 else 1)).astype(np.float32) for s in start] for i in range(4)
        ]
        answers = [
            (IdleClient(str(i)), FitRes(OK, ndarrays_to_parameters(model), 10 + i, {}))
            for i, model in enumerate(models)
        ]
        strategy.configure_fit(server_round, ndarrays_to_parameters(start), manager(4))
        parameters, _ = strategy.aggregate_fit(server_round, answers, [])
        examples = np.array([10.0, 11.0, 12.0, 13.0])
        updates = [[w.astype(np.float64) - s for w, s in zip(model, start)] for model in models]
        previous = layer_by_layer_centered_clipping(previous, updates, examples / examples.sum())
        expected = [(s + c).astype(np.float32) for s, c in zip(start, previous)]
        assert all(np.array_equal(a, b) for a, b in zip(parameters_to_ndarrays(parameters), expected)), server_round
        assert all(np.array_equal(a, b) and a.shape == b.shape for a, b in zip(strategy.previous, previous))
        start = expected


def test_update_numbers_by_hand() -> None:
    found = update_numbers(START, results((3, 4), (3, 4), (-3, -4)), {"2": "discarded"})
    assert found["0"] == {"norm": 5.0, "distance_to_median": 0.0, "cosine_to_median": pytest.approx(1.0)}
    assert found["2"]["cosine_to_median"] == pytest.approx(-1.0) and found["2"]["distance_to_median"] == 10.0
    assert found["2"]["defence"] == "discarded" and "defence" not in found["1"]
