"""Per-round records and progress lines, driven by the run strategy with FedAvg as its aggregator."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from flwr.common import Code, EvaluateRes, FitRes, Status, ndarrays_to_parameters
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from conftest import IdleClient
from fedmnist.results.live_log import read_live_log
from fedmnist.results.records import RoundRecord
from fedmnist.server.recorder import RoundRecorder, progress_line
from fedmnist.server.run_strategy import RunStrategy
from fedmnist.server.strategies import weighted_average
from fedmnist.server.validation import UpdateValidator

OK = Status(code=Code.OK, message="")


class Clock:
    """A clock the test moves by hand, so durations are exact."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_round_record_has_weighted_metrics_timings_and_goes_to_the_log(tmp_path: Path) -> None:
    clock = Clock()
    log_path = tmp_path / "history_1.jsonl"
    inner = FedAvg(
        min_fit_clients=0,
        min_available_clients=0,  # Sampling returns at once: no clients here.
        fit_metrics_aggregation_fn=weighted_average,
        evaluate_metrics_aggregation_fn=weighted_average,
    )
    recorder = RunStrategy(
        lambda: inner, validator=UpdateValidator(), recorder=RoundRecorder(num_rounds=1, log_path=log_path, clock=clock)
    )
    params = ndarrays_to_parameters([np.zeros(2, np.float32)])
    assert recorder.configure_fit(1, params, SimpleClientManager()) == []
    fits: list[tuple[ClientProxy, FitRes]] = [
        (
            IdleClient(cid),
            FitRes(
                OK,
                ndarrays_to_parameters([np.full(2, v, np.float32)]),
                n,
                {"accuracy": a, "loss": 1.0, "fit_seconds": s, "partition_id": pid},
            ),
        )
        for cid, pid, v, n, a, s in (("a", 0, 1.0, 100, 0.9, 0.4), ("b", 1, 3.0, 300, 0.5, 0.6))
    ]
    clock.now += 0.6
    new_params, fit_metrics = recorder.aggregate_fit(1, fits, [])
    assert fit_metrics["accuracy"] == 0.6  # (100 * 0.9 + 300 * 0.5) / 400
    evaluations: list[tuple[ClientProxy, EvaluateRes]] = [
        (IdleClient("b"), EvaluateRes(OK, 0.5, 10, {"accuracy": 0.8, "evaluate_seconds": 0.1, "partition_id": 1}))
    ]
    clock.now += 0.2
    recorder.aggregate_evaluate(1, evaluations, [RuntimeError("client lost")])

    record = recorder.recorder.rounds[0]
    # Each client's own numbers, by partition: client 1 trained and evaluated, client 0 only trained.
    # Their updates (1, 1) and (3, 3) from (0, 0): both sqrt(2) from their median (2, 2), pointing its way.
    root2 = pytest.approx(2**0.5)
    assert record["per_client"] == [
        {
            "cid": "a",
            "partition_id": 0,
            "fit": {"examples": 100, "accuracy": 0.9, "loss": 1.0, "seconds": 0.4},
            "update": {"norm": root2, "distance_to_median": root2, "cosine_to_median": pytest.approx(1.0)},
        },
        {
            "cid": "b",
            "partition_id": 1,
            "fit": {"examples": 300, "accuracy": 0.5, "loss": 1.0, "seconds": 0.6},
            "evaluate": {"examples": 10, "accuracy": 0.8, "seconds": 0.1},
            "update": {
                "norm": pytest.approx(18**0.5),
                "distance_to_median": root2,
                "cosine_to_median": pytest.approx(1.0),
            },
        },
    ]
    assert record["fit_reporting"] == {"accuracy": 2, "loss": 2} and record["evaluate_reporting"] == {
        "accuracy": 1,
        "loss": 0,
    }
    assert abs(record["seconds"] - 0.8) < 1e-9  # From configure_fit to the end of aggregate_evaluate.
    assert record["client_fit_seconds"] == 0.6 and record["client_evaluate_seconds"] == 0.1
    assert abs(record["coordination_seconds"] - 0.1) < 1e-9  # 0.8 - 0.6 - 0.1
    assert record["evaluate_failures"] == 1 and record["fit_results"] == 2
    assert read_live_log(log_path).records == [record]
    assert new_params is not None


def test_progress_line_estimates_time_left() -> None:
    record: RoundRecord = {
        "round": 10,
        "seconds": 0.5,
        "centralized": {"accuracy": 0.9123},
        "evaluate": {"accuracy": 0.9, "loss": 0.3},
    }
    line = progress_line(record, num_rounds=40, elapsed=5.0)
    # 5 s for 10 rounds -> 0.5 s each -> 30 rounds left take 15 s.
    assert (
        line
        == "round 10/40 | held-out acc 91.2% | clients acc 90.0% loss 0.300 | 0.50 s/round | 5 s elapsed, ~15 s left"
    )
    answered = progress_line({**record, "fit_results": 2, "connected_clients": 3}, num_rounds=40, elapsed=5.0)
    assert "| held-out acc 91.2% | 2/3 clients | clients acc" in answered


def test_a_round_that_accepted_no_update_says_so_instead_of_the_clients_unchanged_numbers() -> None:
    record: RoundRecord = {
        "round": 2,
        "seconds": 0.5,
        "centralized": {"accuracy": 0.469},
        "evaluate": {"accuracy": 0.48, "loss": 1.7},
        "fit_results": 0,
        "connected_clients": 3,
        "fit_failures": 3,
        "rejected_updates": 2,
    }
    assert progress_line(record, num_rounds=40, elapsed=1.0) == (
        "round 2/40 | held-out acc 46.9% | 0/3 clients: NO UPDATE ACCEPTED (2 rejected, 1 failed), model unchanged"
        " | 0.50 s/round | 1 s elapsed, ~19 s left"
    )


def test_round_zero_is_logged_once_and_rounds_count_the_connected_clients(tmp_path: Path) -> None:
    import json

    from conftest import IdleClient

    log_path = tmp_path / "history_1.jsonl"
    inner = FedAvg(
        min_fit_clients=0,
        min_available_clients=0,
        fraction_fit=0.0,
        fraction_evaluate=0.0,
        evaluate_fn=lambda server_round, weights, config: (2.3, {"accuracy": 0.1}),
    )
    recorder = RunStrategy(
        lambda: inner, validator=UpdateValidator(), recorder=RoundRecorder(num_rounds=1, log_path=log_path)
    )
    params = ndarrays_to_parameters([np.zeros(2, np.float32)])
    recorder.evaluate(0, params)
    recorder.evaluate(0, params)  # Flower evaluates round 0 once; a second call must not log again.
    manager = SimpleClientManager()
    for cid in ("a", "b"):
        manager.register(IdleClient(cid))
    recorder.configure_fit(1, params, manager)
    recorder.aggregate_fit(1, [], [])
    recorder.aggregate_evaluate(1, [], [])

    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [entry.get("round") for entry in entries] == [None, 1]
    assert (
        entries[0]["initial"]["centralized"] == {"accuracy": 0.1} and entries[0]["initial"]["loss_centralized"] == 2.3
    )
    assert entries[1]["connected_clients"] == 2


def test_a_reason_many_clients_failed_for_is_said_once_with_their_count(caplog: pytest.LogCaptureFixture) -> None:
    from fedmnist.server.recorder import _log_failures

    with caplog.at_level(logging.WARNING, logger="fedmnist"):
        _log_failures(2, "training", [*[RuntimeError("gave up")] * 4, TimeoutError()])
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "round 2: training failed (4 clients): RuntimeError: gave up", lines
    assert len(lines) == 2 and "(" not in lines[1].split(":")[1]
