"""Update validation against hand-made updates, and the faults clients can inject."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import Code, EvaluateRes, FitRes, Parameters, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_proxy import ClientProxy

from fedmnist.client.faults import FAULTS_VARIABLE, InjectedDrop, corrupt, fail_if_due, node_fault, parse_fault
from fedmnist.server.validation import (
    RejectedResult,
    RejectedUpdate,
    cap_examples,
    update_norm,
    validate_evaluations,
    validate_updates,
)

GLOBAL = [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]


class Proxy(ClientProxy):
    """Only the id matters here: validation never talks to the client."""

    def get_properties(self, *args, **kwargs):
        raise NotImplementedError

    def get_parameters(self, *args, **kwargs):
        raise NotImplementedError

    def fit(self, *args, **kwargs):
        raise NotImplementedError

    def evaluate(self, *args, **kwargs):
        raise NotImplementedError

    def reconnect(self, *args, **kwargs):
        raise NotImplementedError


def result(cid: str, weights: list[np.ndarray], num_examples: int = 10, metrics: dict | None = None):
    return Proxy(cid), FitRes(Status(Code.OK, ""), ndarrays_to_parameters(weights), num_examples, metrics or {})


def evaluation(cid: str, loss: float = 0.5, num_examples: int = 10, metrics: dict | None = None):
    return Proxy(cid), EvaluateRes(Status(Code.OK, ""), loss, num_examples, metrics or {"accuracy": 0.9})


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


def test_a_clientapp_node_takes_its_fault_from_its_node_config_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FAULTS_VARIABLE, "0=nan, 2=drop-at-round:2")
    assert node_fault(2, {"partition-id": 2}) == "drop-at-round:2"  # A simulation's virtual node.
    assert node_fault(1, {"partition-id": 1}) is None
    assert node_fault(1, {"partition-id": 1, "fault": "scale"}) == "scale"  # A SuperNode's --node-config.
    fail_if_due("drop-at-round:2", 1)
    with pytest.raises(InjectedDrop, match="dropping out of round 2"):
        fail_if_due("drop-at-round:2", 2)
    fail_if_due("crash-at-round:2", 1, own_process=False)
    for server_round in (2, 3):  # A ClientApp's crash fails every message from then on; its process lives.
        with pytest.raises(InjectedDrop, match="crashed at round 2"):
            fail_if_due("crash-at-round:2", server_round, own_process=False)
    monkeypatch.setenv(FAULTS_VARIABLE, "2=drop")
    with pytest.raises(ValueError, match="unknown fault 'drop'"):
        node_fault(2, {})


def test_every_fault_is_caught_by_validation() -> None:
    honest_updates = [result(cid, honest(step)) for cid, step in (("a", 0.1), ("b", 0.12), ("c", 0.09))]
    faulty = [result(fault, corrupt(fault, honest(0.1), GLOBAL)) for fault in ("nan", "shape", "scale")]
    accepted, rejected = validate_updates(honest_updates + faulty, GLOBAL, 5.0)
    assert sorted(p.cid for p, _ in accepted) == ["a", "b", "c"]
    assert sorted(str(e).split()[1].rstrip(":") for e in rejected) == ["nan", "scale", "shape"]
    merged = np.mean([parameters_to_ndarrays(r.parameters)[0] for _, r in accepted], axis=0)
    assert np.isfinite(merged).all()


@pytest.mark.parametrize(
    ("num_examples", "metrics", "reason"),
    [
        (10, {"accuracy": "abc"}, "metric 'accuracy' is 'abc', not a finite number"),
        (10, {"loss": float("nan")}, "metric 'loss' is nan, not a finite number"),
        (10, {"accuracy": b"x"}, "metric 'accuracy' is b'x', not a finite number"),
        (10, {"accuracy": True}, "metric 'accuracy' is True, not a finite number"),
        (10, {"node": "x" * 65}, f"metric 'node' is '{'x' * 36}..., not a finite number"),  # Text, but too long.
        (10, {"node": 7.0, "nodes": "10.0.0.1"}, "metric 'nodes' is '10.0.0.1', not a finite number"),
        (0, {}, "num_examples 0 is not a positive whole number"),
        (-1000, {}, "num_examples -1000 is not a positive whole number"),
    ],
)
def test_results_with_bad_counts_or_metrics_are_rejected(num_examples: int, metrics: dict, reason: str) -> None:
    results = [
        result("good1", honest(0.1)),
        result("good2", honest(0.12)),
        result("bad", honest(0.1), num_examples, metrics),
    ]
    accepted, rejected = validate_updates(results, GLOBAL, 5.0)
    assert [p.cid for p, _ in accepted] == ["good1", "good2"]
    assert [str(error) for error in rejected] == [f"client bad: {reason}"]


def test_the_text_metrics_pass_when_short() -> None:
    """A virtual client's Ray node (an address) and a participant's name are the only text a result may carry."""
    results = [result("a", honest(0.1), metrics={"node": "10.0.0.1", "participant": "alice"}), result("b", honest(0.1))]
    accepted, rejected = validate_updates(results, GLOBAL, 5.0)
    assert [p.cid for p, _ in accepted] == ["a", "b"] and not rejected


def test_undecodable_weights_are_rejected_not_raised() -> None:
    proxy, res = result("bad", honest(0.1))
    res.parameters = Parameters(tensors=[b"not an array"], tensor_type="numpy.ndarray")
    accepted, rejected = validate_updates([result("good", honest(0.1)), (proxy, res)], GLOBAL, 5.0)
    assert [p.cid for p, _ in accepted] == ["good"]
    assert "client bad: weights cannot be decoded" in str(rejected[0])


def test_example_counts_are_capped_at_ten_times_the_median_of_the_others() -> None:
    # [100, 120, 10**12]: the third is held to 10 x median(100, 120) = 1100; the others' limits
    # (10 x median(120, 10**12), 10 x median(100, 10**12)) are far above their claims.
    results = [result(cid, honest(0.1), count) for cid, count in (("a", 100), ("b", 120), ("c", 10**12))]
    capped = cap_examples(results, 10.0)
    assert [res.num_examples for _, res in capped] == [100, 120, 1100]
    # Two clients: a liar claiming 10**12 against an honest 100 weighs 1000, not 10**12.
    two = cap_examples([result("honest", honest(0.1), 100), result("liar", honest(0.1), 10**12)], 10.0)
    assert [res.num_examples for _, res in two] == [100, 1000]
    assert cap_examples([result("alone", honest(0.1), 10**12)], 10.0)[0][1].num_examples == 10**12


def test_a_zero_model_with_a_huge_count_cannot_wipe_the_average() -> None:
    # The attack of the issue: all-zero weights claiming 10**12 examples. Capped at 10 x 100 = 1000
    # against 2 x 100 honest, FedAvg keeps 200 / 1200 = 1/6 of the honest step, not ~0.
    global_weights = [np.ones((2, 2), np.float32), np.ones(2, np.float32)]
    near = [np.full((2, 2), 1.1, np.float32), np.full(2, 1.1, np.float32)]
    zero = [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]
    results = [result("a", near, 100), result("b", near, 100), result("attacker", zero, 10**12)]
    accepted, _ = validate_updates(results, global_weights, max_norm_factor=100.0)
    assert sorted(res.num_examples for _, res in accepted) == [100, 100, 1000]


def test_evaluations_with_bad_loss_counts_or_metrics_are_rejected() -> None:
    results = [
        evaluation("good"),
        evaluation("nan-loss", loss=float("nan"), metrics={"accuracy": 0.9, "partition_id": 1}),
        evaluation("zero", num_examples=0),
        evaluation("text", metrics={"accuracy": "high", "partition_id": 3, "participant": "alice"}),
        evaluation("no-accuracy", metrics={"loss": 0.4}),
    ]
    accepted, rejected = validate_evaluations(results, 10.0)
    assert [p.cid for p, _ in accepted] == ["good", "no-accuracy"]  # Leaving a key out is allowed.
    assert all(isinstance(error, RejectedResult) and not isinstance(error, RejectedUpdate) for error in rejected)
    assert [str(error) for error in rejected] == [
        "client 1: loss nan is not a finite number",  # Named by partition id, as a person knows them.
        "client zero: num_examples 0 is not a positive whole number",  # Sent none: Flower's id, cut short.
        "client 3 (web: alice): metric 'accuracy' is 'high', not a finite number",  # A WebSocket participant's name.
    ]


def test_a_capped_count_is_reported_once_per_client(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from fedmnist.server.validation import UpdateValidator

    validator = UpdateValidator(max_fit_examples=50)
    validator.start_round(ndarrays_to_parameters(GLOBAL))
    results = [result("a", honest(0.1), 100), result("b", honest(0.12), 40)]
    with caplog.at_level(logging.WARNING, logger="fedmnist.server.validation"):
        for server_round in (1, 2, 3):
            accepted, _ = validator.check_updates(server_round, results)
            assert [res.num_examples for _, res in accepted] == [50, 40]
    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.name == "fedmnist.server.validation" and record.levelno == logging.WARNING
    ]
    assert warnings == [warnings[0]] and warnings[0].startswith("client a claims 100 examples; weighted as 50")
