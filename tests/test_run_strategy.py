"""The run strategy: the steps of a round in their order, the resume offset, the aggregator built late."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.common import Code, EvaluateRes, FitRes, Scalar, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

import fedmnist.server.saving
from conftest import IdleClient
from fedmnist.results.checkpoint import Checkpoint, read_checkpoint, save_checkpoint
from fedmnist.results.live_log import read_live_log
from fedmnist.results.paths import RunPaths
from fedmnist.server.recorder import RoundRecorder
from fedmnist.server.run_strategy import RunStopped, RunStrategy, canonical_order
from fedmnist.server.saving import RoundNotSaved, RoundSaver
from fedmnist.server.strategies import build_strategy
from fedmnist.server.validation import UpdateValidator
from fedmnist.settings.server_settings import ServerSettings

OK = Status(code=Code.OK, message="")
WEIGHTS = [np.zeros(2, np.float32)]


def fit_result(
    cid: str, value: float, examples: int = 10, metrics: dict[str, Scalar] | None = None
) -> tuple[ClientProxy, FitRes]:
    return IdleClient(cid), FitRes(OK, ndarrays_to_parameters([np.full(2, value, np.float32)]), examples, metrics or {})


class SpyAggregator(FedAvg):
    """FedAvg that notes the rounds and results it is given."""

    def __init__(self) -> None:
        super().__init__(
            min_fit_clients=0,
            min_evaluate_clients=0,
            min_available_clients=0,
            fraction_evaluate=0.0,
            initial_parameters=ndarrays_to_parameters(WEIGHTS),
            evaluate_fn=lambda rnd, weights, cfg: (0.5, {"accuracy": 0.25}),
        )
        self.calls: list[tuple[str, int, list[str]]] = []

    def aggregate_fit(self, server_round, results, failures):
        self.calls.append(("aggregate_fit", server_round, [proxy.cid for proxy, _ in results]))
        return super().aggregate_fit(server_round, results, failures)

    def evaluate(self, server_round, parameters):
        self.calls.append(("evaluate", server_round, []))
        return super().evaluate(server_round, parameters)


class SavesAtOnce:
    """An ``on_round_end`` that calls ``save`` in the round's own thread, then ``then`` (the progress line)."""

    def __init__(self, save: Callable[[RunStrategy], None]) -> None:
        self.save = save

    def __call__(self, run: RunStrategy, then: Callable[[], None]) -> None:
        self.save(run)
        then()

    def wait(self) -> None:
        pass


def run_strategy(tmp_path: Path, aggregator: FedAvg, **kwargs) -> RunStrategy:
    return RunStrategy(
        lambda: aggregator,
        validator=UpdateValidator(),
        recorder=RoundRecorder(num_rounds=8, log_path=tmp_path / "history_8.jsonl"),
        **kwargs,
    )


def test_the_aggregator_is_built_on_first_use_only() -> None:
    built = []

    def build() -> FedAvg:
        built.append(1)
        return build_strategy(ServerSettings(clients=1, min_clients=1), WEIGHTS)

    strategy = RunStrategy(build, validator=UpdateValidator(), recorder=RoundRecorder(num_rounds=1))
    assert built == []  # Nothing built yet: the server can listen first.
    parameters = strategy.initialize_parameters(client_manager=SimpleClientManager())
    assert parameters is not None
    strategy.evaluate(0, parameters)
    assert built == [1]
    assert [a.tolist() for a in parameters_to_ndarrays(parameters)] == [a.tolist() for a in WEIGHTS]
    assert strategy.recorder.parameters is parameters


def test_a_round_validates_then_aggregates_then_records_then_checkpoints_then_announces(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    aggregator = SpyAggregator()
    seen_at_checkpoint: list[tuple[list[int], list[str]]] = []

    def checkpoint(run: RunStrategy) -> None:
        progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("round 6/8")]
        seen_at_checkpoint.append(([record["round"] for record in run.recorder.rounds], progress))
        assert run.aggregator is aggregator  # The state to save, without reaching through wrappers.

    strategy = run_strategy(tmp_path, aggregator, resumed_after=5, on_round_end=SavesAtOnce(checkpoint))
    parameters = strategy.initialize_parameters(SimpleClientManager())
    assert parameters is not None
    strategy.evaluate(0, parameters)  # Round 0 stays 0 in a resumed run.
    strategy.configure_fit(1, parameters, SimpleClientManager())
    # Two honest updates (distance 1.41 and 1.70 from zero) and one 100x larger: the validator drops it.
    results = [fit_result("a", 1.0), fit_result("b", 1.2), fit_result("huge", 100.0)]
    with caplog.at_level(logging.INFO):
        new_parameters, _ = strategy.aggregate_fit(1, results, [])
        assert new_parameters is not None
        strategy.evaluate(1, new_parameters)
        strategy.aggregate_evaluate(1, [], [])

    assert aggregator.calls == [("evaluate", 0, []), ("aggregate_fit", 6, ["a", "b"]), ("evaluate", 6, [])]
    # (1.0 * 10 + 1.2 * 10) / 20 = 1.1: the rejected update had no weight.
    assert parameters_to_ndarrays(new_parameters)[0].tolist() == pytest.approx([1.1, 1.1])
    # When the checkpoint is taken the record of round 6 exists and no progress line has been logged yet.
    assert seen_at_checkpoint == [([6], [])]
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("round 6/8")]
    assert len(progress) == 1 and progress[0].startswith("round 6/8 | held-out acc 25.0%")
    record = read_live_log(tmp_path / "history_8.jsonl").records[0]
    assert record["round"] == 6 and record["fit_results"] == 2 and record["rejected_updates"] == 1
    assert record["fit_failures"] == 1 and "client huge: update norm" in record["failure_reasons"][0]
    assert strategy.recorder.parameters is new_parameters


def test_rejected_evaluations_are_failures_and_do_not_reach_the_aggregator(tmp_path: Path) -> None:
    aggregator = SpyAggregator()
    strategy = run_strategy(tmp_path, aggregator)
    parameters = strategy.initialize_parameters(SimpleClientManager())
    assert parameters is not None
    strategy.configure_fit(1, parameters, SimpleClientManager())
    strategy.aggregate_fit(1, [fit_result("a", 1.0)], [])
    evaluations: list[tuple[ClientProxy, EvaluateRes]] = [
        (IdleClient("a"), EvaluateRes(OK, 0.5, 10, {"accuracy": 0.75})),
        (IdleClient("nan"), EvaluateRes(OK, float("nan"), 10, {"accuracy": 0.1})),
    ]
    loss, _ = strategy.aggregate_evaluate(1, evaluations, [])
    assert loss == 0.5  # Only client a's loss was aggregated.
    record = strategy.recorder.rounds[0]
    assert record["evaluate_results"] == 1 and record["rejected_evaluations"] == 1 and record["evaluate_failures"] == 1


def test_stop_lets_the_round_being_recorded_finish_then_refuses_every_later_step(tmp_path: Path) -> None:
    """Ctrl-C while Flower drives the rounds from another thread: the round being checkpointed completes, no other."""
    checkpointing, release = threading.Event(), threading.Event()

    def slow_checkpoint(run: RunStrategy) -> None:
        checkpointing.set()
        release.wait(5)

    strategy = run_strategy(tmp_path, SpyAggregator(), on_round_end=SavesAtOnce(slow_checkpoint))
    parameters = strategy.initialize_parameters(SimpleClientManager())
    assert parameters is not None
    strategy.configure_fit(1, parameters, SimpleClientManager())
    new_parameters, _ = strategy.aggregate_fit(1, [fit_result("a", 1.0)], [])
    assert new_parameters is not None
    flower = threading.Thread(target=strategy.aggregate_evaluate, args=(1, [], []))  # Flower's thread, round 1's end.
    flower.start()
    assert checkpointing.wait(5)
    stopper = threading.Thread(target=strategy.stop)  # The main thread, on Ctrl-C.
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive()  # It waits for round 1's record, checkpoint and line.
    release.set()
    stopper.join(5)
    flower.join(5)
    assert [record["round"] for record in strategy.recorder.rounds] == [1]
    for step in (
        lambda: strategy.configure_fit(2, new_parameters, SimpleClientManager()),
        lambda: strategy.aggregate_fit(2, [fit_result("a", 2.0)], []),
        lambda: strategy.evaluate(2, new_parameters),
        lambda: strategy.configure_evaluate(2, new_parameters, SimpleClientManager()),
        lambda: strategy.aggregate_evaluate(2, [], []),
    ):
        with pytest.raises(RunStopped):
            step()
    assert [record["round"] for record in strategy.recorder.rounds] == [1]
    assert strategy.recorder.parameters is new_parameters  # Round 2's update never reached the record.


def test_the_same_updates_in_any_arrival_order_make_the_same_bits(tmp_path: Path) -> None:
    # In float32, (1e8 + 1) - 1e8 is 0 but (1e8 - 1e8) + 1 is 1: the order of the terms shows in the sum.
    updates = [fit_result(f"cid-{p}", value, metrics={"partition_id": p}) for p, value in enumerate([1e8, 1.0, -1e8])]
    unsorted, canonical = set(), set()
    for arrival in itertools.permutations(updates):
        plain = FedAvg().aggregate_fit(1, list(arrival), [])[0]
        spy = SpyAggregator()
        strategy = run_strategy(tmp_path, spy)
        initial = strategy.initialize_parameters(SimpleClientManager())
        assert initial is not None
        strategy.configure_fit(1, initial, SimpleClientManager())
        ours = strategy.aggregate_fit(1, list(arrival), [])[0]
        assert plain is not None and ours is not None
        unsorted.add(parameters_to_ndarrays(plain)[0].tobytes())
        canonical.add(parameters_to_ndarrays(ours)[0].tobytes())
        assert spy.calls == [("aggregate_fit", 1, ["cid-0", "cid-1", "cid-2"])]  # Partition order, whoever came first.
    assert len(unsorted) > 1  # Flower's FedAvg alone: the arrival order changes the model.
    assert len(canonical) == 1


def test_results_are_ordered_by_partition_id_and_unusable_ids_go_last() -> None:
    results = [
        fit_result("z", 1.0, metrics={"partition_id": 2}),
        fit_result("y", 1.0, metrics={"partition_id": "0"}),  # Not an int: last, by client id.
        fit_result("x", 1.0, metrics={"partition_id": 0}),
        fit_result("w", 1.0),
        fit_result("v", 1.0, metrics={"partition_id": True}),
    ]
    assert [proxy.cid for proxy, _ in canonical_order(results)] == ["x", "z", "v", "w", "y"]


def saving_strategy(tmp_path: Path) -> tuple[RunStrategy, RunPaths]:
    """A run strategy with the run's RoundSaver, writing into ``tmp_path``; its round 1 is fitted and evaluated."""
    paths = RunPaths(tmp_path, 8)
    held_out = SimpleNamespace(mistakes=[{"index": 3, "true": 1, "predicted": 7, "confidence": 0.9}])
    saver = RoundSaver(ServerSettings(rounds=8), "mnist-5k", paths, held_out)  # type: ignore[arg-type]  # Its mistakes.
    strategy = run_strategy(tmp_path, SpyAggregator(), on_round_end=saver)
    parameters = strategy.initialize_parameters(SimpleClientManager())
    assert parameters is not None
    strategy.configure_fit(1, parameters, SimpleClientManager())
    new_parameters, _ = strategy.aggregate_fit(1, [fit_result("a", 1.0)], [])
    assert new_parameters is not None
    strategy.evaluate(1, new_parameters)
    return strategy, paths


def test_a_rounds_files_are_written_while_the_next_round_trains_and_its_line_comes_once_they_are(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    writing, release = threading.Event(), threading.Event()

    def slow_save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
        writing.set()
        release.wait(5)
        save_checkpoint(path, checkpoint)

    monkeypatch.setattr(fedmnist.server.saving, "save_checkpoint", slow_save_checkpoint)
    strategy, paths = saving_strategy(tmp_path)
    with caplog.at_level(logging.INFO):
        strategy.aggregate_evaluate(1, [], [])  # Returns while the checkpoint is being written: round 2 may begin.
        assert writing.wait(5)
        assert not paths.checkpoint.exists() and not any("round 1/8" in r.getMessage() for r in caplog.records)
        assert json.loads(paths.mistakes.read_text())["round"] == 1  # The dashboard's file comes first.
        round_two = threading.Thread(target=strategy.aggregate_fit, args=(2, [fit_result("a", 2.0)], []))
        round_two.start()  # Round 2's clients trained; its aggregation waits for round 1's checkpoint.
        round_two.join(0.2)
        assert round_two.is_alive() and [r["round"] for r in strategy.recorder.rounds] == [1]
        release.set()
        round_two.join(5)
    assert read_checkpoint(paths.checkpoint).round == 1
    assert [r.getMessage()[:10] for r in caplog.records if r.getMessage().startswith("round 1/8")] == ["round 1/8 "]


def test_a_round_whose_checkpoint_cannot_be_written_fails_by_its_number_at_the_next_aggregation(tmp_path: Path) -> None:
    strategy, paths = saving_strategy(tmp_path)
    paths.checkpoint.parent.mkdir(parents=True)
    paths.checkpoint.mkdir()  # A folder where the file goes: the write fails (as on a full disk).
    strategy.aggregate_evaluate(1, [], [])
    with pytest.raises(RoundNotSaved) as raised:
        strategy.aggregate_fit(2, [fit_result("a", 2.0)], [])
    assert raised.value.round == 1 and paths.checkpoint.name in str(raised.value)
    assert str(raised.value).startswith("its checkpoint could not be written (")
    assert [r["round"] for r in strategy.recorder.rounds] == [1]  # Round 2 was not recorded.


def test_stop_waits_for_the_last_rounds_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
        time.sleep(0.3)
        save_checkpoint(path, checkpoint)

    monkeypatch.setattr(fedmnist.server.saving, "save_checkpoint", slow_save_checkpoint)
    strategy, paths = saving_strategy(tmp_path)
    strategy.aggregate_evaluate(1, [], [])
    strategy.stop()  # Ctrl-C: the partial results are saved next, and the process ends after them.
    assert read_checkpoint(paths.checkpoint).round == 1
