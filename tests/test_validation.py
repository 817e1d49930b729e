"""Update validation against hand-made updates, and the faults clients can inject."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_proxy import ClientProxy

from fedmnist.faults import corrupt, parse_fault
from fedmnist.validation import RejectedUpdate, update_norm, validate_updates

GLOBAL = [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]


class Proxy(ClientProxy):
    """Only the id matters here: validation never talks to the client."""

    def get_properties(self, *args, **kwargs): raise NotImplementedError
    def get_parameters(self, *args, **kwargs): raise NotImplementedError
    def fit(self, *args, **kwargs): raise NotImplementedError
    def evaluate(self, *args, **kwargs): raise NotImplementedError
    def reconnect(self, *args, **kwargs): raise NotImplementedError


def result(cid: str, weights: list[np.ndarray]) -> tuple[ClientProxy, FitRes]:
    return Proxy(cid), FitRes(Status(Code.OK, ""), ndarrays_to_parameters(weights), 10, {})


def honest(step: float) -> list[np.ndarray]:
    return [np.full((2, 2), step, np.float32), np.full(2, step, np.float32)]


def test_update_norm_by_hand() -> None:
    # Six entries of 0.5 away from zero: sqrt(6 * 0.25) = 1.2247...
    assert update_norm(honest(0.5), GLOBAL) == pytest.approx(np.sqrt(1.5))


def test_honest_updates_pass() -> None:
    accepted, rejected = validate_updates([result("a", honest(0.1)), result("b", honest(0.2))], GLOBAL, 5.0)
    assert [p.cid for p, _ in accepted] == ["a", "b"] and rejected == []


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ([np.full((2, 2), np.nan, np.float32), np.zeros(2, np.float32)], "array 0 has non-finite values"),
        ([np.zeros((2, 2), np.float32)], "1 arrays, the model has 2"),
        ([np.zeros((4,), np.float32), np.zeros(2, np.float32)], "array 0 is float32[4], the model's is float32[2, 2]"),
        ([np.zeros((2, 2), np.float64), np.zeros(2, np.float32)], "array 0 is float64[2, 2]"),
        (honest(10.0), "more than 5 x the round's median"),
    ],
)
def test_malformed_or_outsized_updates_are_rejected_with_a_reason(bad: list[np.ndarray], reason: str) -> None:
    results = [result("good1", honest(0.1)), result("good2", honest(0.12)), result("bad", bad)]
    accepted, rejected = validate_updates(results, GLOBAL, 5.0)
    assert [p.cid for p, _ in accepted] == ["good1", "good2"]
    assert len(rejected) == 1 and isinstance(rejected[0], RejectedUpdate)
    assert "client bad" in str(rejected[0]) and reason in str(rejected[0])


def test_faults_corrupt_updates_as_documented() -> None:
    start, trained = GLOBAL, honest(0.1)
    assert np.isnan(corrupt("nan", trained, start)[0]).all()
    assert len(corrupt("shape", trained, start)) == 1
    np.testing.assert_allclose(corrupt("scale", trained, start)[0], 10.0)  # 0 + 100 * 0.1
    assert corrupt(None, trained, start) is trained
    assert parse_fault("crash-at-round:3") == "crash-at-round:3"
    with pytest.raises(ValueError, match="unknown fault"):
        parse_fault("crash-at-round:0")


def test_every_fault_is_caught_by_validation() -> None:
    honest_updates = [result(cid, honest(step)) for cid, step in (("a", 0.1), ("b", 0.12), ("c", 0.09))]
    faulty = [result(fault, corrupt(fault, honest(0.1), GLOBAL)) for fault in ("nan", "shape", "scale")]
    accepted, rejected = validate_updates(honest_updates + faulty, GLOBAL, 5.0)
    assert sorted(p.cid for p, _ in accepted) == ["a", "b", "c"]
    assert sorted(str(e).split()[4].rstrip(":") for e in rejected) == ["nan", "scale", "shape"]
    merged = np.mean([parameters_to_ndarrays(r.parameters)[0] for _, r in accepted], axis=0)
    assert np.isfinite(merged).all()
