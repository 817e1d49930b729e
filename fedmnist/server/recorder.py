"""Per-round records: the live JSONL log, progress lines and timings.

``RoundRecorder`` decides nothing: the run strategy (``fedmnist.server.run_strategy``)
tells it what each step of a round gave (fit, centralized evaluate,
distributed evaluate); it appends one JSON line per finished round and logs
a progress line with the accuracy so far and the time left.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from flwr.common import EvaluateRes, FitRes, Parameters, Scalar, parameters_to_ndarrays
from flwr.server.client_proxy import ClientProxy

from fedmnist.model.checksum import weights_checksum
from fedmnist.results.live_log import LiveLogWriter
from fedmnist.results.records import (
    ClientEntry,
    Evaluation,
    PrivacySpent,
    RoundRecord,
    StageNumbers,
    UpdateNumbers,
    client_order,
)
from fedmnist.server.strategies import reporting_clients
from fedmnist.server.validation import RejectedResult, RejectedUpdate, client_name
from fedmnist.settings import defaults

log = logging.getLogger(__name__)

MAX_REASONS = 10  # Failure messages kept per round record.
Failures = list[tuple[ClientProxy, FitRes] | tuple[ClientProxy, EvaluateRes] | BaseException]


class RoundRecorder:
    """Records each round of a run.

    A round's record (one JSON object, also appended to ``log_path``) holds:
    ``round``; ``seconds`` (wall time from the round's start, after sampling,
    to the end of the distributed evaluation); ``fit``, ``evaluate`` and
    ``centralized`` metrics; result and failure counts; and
    ``client_fit_seconds`` / ``client_evaluate_seconds``, the slowest client's
    local time, from which ``coordination_seconds`` (what the round cost beyond
    local work and the server's own evaluation) follows; and
    ``connected_clients`` as the round began. The starting model's held-out
    evaluation is logged once, as an ``{"initial": ...}`` line before round 1.
    """

    def __init__(
        self,
        *,
        num_rounds: int,
        log_path: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        earlier_rounds: list[RoundRecord] | None = None,
        initial: Evaluation | None = None,
        centralized_extras: Callable[[], Evaluation] | None = None,
    ) -> None:
        self.num_rounds = num_rounds
        self.live_log = LiveLogWriter(log_path) if log_path is not None else None
        self.clock = clock
        # A resumed run starts with the rounds (and round-0 evaluation) it already has.
        self.rounds: list[RoundRecord] = list(earlier_rounds or [])
        self.initial: Evaluation | None = initial
        self.centralized_extras = centralized_extras  # More of the held-out evaluation (the confusion matrix).
        self.parameters: Parameters | None = None  # The latest global weights.
        self.client_timings: dict[str, float] = {}
        self._current: RoundRecord = {"round": 0}
        self._per_client: dict[str, ClientEntry] = {}  # This round's results, by Flower's client id.
        self._round_started = 0.0
        self._first_round_started: float | None = None
        self._rounds_here = 0  # Rounds run by this process (fewer than done after a resume).
        self.first_round_started_at: float | None = None

    @property
    def current_round(self) -> int:
        """The round being run, or the last one begun (its checkpoint may be what failed)."""
        return self._current["round"] or len(self.rounds) + 1

    def start_round(self, server_round: int, connected_clients: int) -> None:
        """A round begins, with ``connected_clients`` connected (some may be left out by --fraction-fit)."""
        self._round_started = self.clock()
        if self._first_round_started is None:
            self._first_round_started = self._round_started
            self.first_round_started_at = time.time()  # Wall clock, for reports across processes.
        self._current = {"round": server_round, "connected_clients": connected_clients}

    def fitted(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: Failures,
        parameters: Parameters | None,
        metrics: dict[str, Scalar],
        updates: dict[str, UpdateNumbers] | None = None,
    ) -> None:
        """The round's training: the results aggregated, the failures (rejected updates among them).

        ``updates``: how each client's update compared with the others' (``fedmnist.server.update_stats``).
        """
        if parameters is not None:
            self.parameters = parameters
        if self.parameters is not None:  # Unchanged when no update was accepted: the same checksum again.
            self._current["weights_checksum"] = weights_checksum(parameters_to_ndarrays(self.parameters))
        client_metrics = [res.metrics for _, res in results]
        _log_failures(server_round, "training", failures)
        self._per_client = {proxy.cid: _client_entry(proxy, res, "fit") for proxy, res in results}
        for cid, numbers in (updates or {}).items():
            self._per_client[cid]["update"] = numbers
        self._current.update(
            {
                "fit": dict(metrics),
                "fit_results": len(results),
                "fit_reporting": reporting_clients(client_metrics),
                "fit_failures": len(failures),
                "rejected_updates": sum(isinstance(failure, RejectedUpdate) for failure in failures),
                "failure_reasons": [describe_failure(failure) for failure in failures][:MAX_REASONS],
                "client_fit_seconds": _slowest(client_metrics, "fit_seconds"),
            }
        )
        if not self.client_timings:
            self.client_timings = {
                key: _slowest(client_metrics, key) for key in ("startup_seconds", "data_seconds", "warm_up_seconds")
            }

    def privacy(self, spent: PrivacySpent) -> None:
        """The privacy spent by the end of this round (``fedmnist.privacy.dp.PrivacyLedger.record``)."""
        self._current["privacy"] = spent

    def evaluated_centrally(self, server_round: int, result: tuple[float, dict[str, Scalar]], seconds: float) -> None:
        """The global model on the held-out set; round 0 is the starting model."""
        loss, metrics = result
        record: Evaluation = {"centralized": dict(metrics), "centralized_seconds": seconds, "loss_centralized": loss}
        if self.centralized_extras:
            record.update(self.centralized_extras())
        if server_round:
            self._current.update(record)
            return
        log.info("starting global model: held-out accuracy %s", _percent(metrics.get("accuracy")))
        if self.initial is None:  # A resumed run keeps the true round 0.
            self.initial = record
            if self.live_log is not None:
                self.live_log.initial(record)

    def evaluated(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: Failures,
        loss: float | None,
        metrics: dict[str, Scalar],
    ) -> RoundRecord:
        """The clients' evaluation, the round's last step: finish its record, append it to the log, return it."""
        _log_failures(server_round, "evaluation", failures)
        for proxy, res in results:  # Beside the same client's fit numbers, if it trained this round.
            self._per_client.setdefault(proxy.cid, {"cid": proxy.cid}).update(_client_entry(proxy, res, "evaluate"))
        reasons = self._current.get("failure_reasons", [])
        record = self._current
        record.update(
            {
                "loss_distributed": loss,
                "evaluate": dict(metrics),
                "evaluate_results": len(results),
                "evaluate_reporting": reporting_clients([res.metrics for _, res in results]),
                "evaluate_failures": len(failures),
                "rejected_evaluations": sum(isinstance(failure, RejectedResult) for failure in failures),
                "failure_reasons": [*reasons, *(f"evaluation: {describe_failure(f)}" for f in failures)][:MAX_REASONS],
                "client_evaluate_seconds": _slowest([res.metrics for _, res in results], "evaluate_seconds"),
                "per_client": sorted(self._per_client.values(), key=client_order),
            }
        )
        record["seconds"] = self.clock() - self._round_started
        local = (
            record.get("client_fit_seconds", 0.0)
            + record.get("client_evaluate_seconds", 0.0)
            + record.get("centralized_seconds", 0.0)
        )
        record["coordination_seconds"] = max(0.0, record["seconds"] - local)
        self.rounds.append(record)
        if self.live_log is not None:
            self.live_log.round(record)
        return record

    def announce(self, record: RoundRecord) -> None:
        """Log the round's progress line: accuracy so far and the time left."""
        self._rounds_here += 1
        elapsed = self.clock() - (self._first_round_started or 0.0)
        log.info(progress_line(record, self.num_rounds, elapsed, self._rounds_here))


def _client_entry(proxy: ClientProxy, result: FitRes | EvaluateRes, stage: str) -> ClientEntry:
    """One client's numbers for a stage of the round: examples, accuracy, loss and seconds."""
    metrics = result.metrics
    numbers: StageNumbers = {"examples": result.num_examples}
    for key, name in (("accuracy", "accuracy"), ("loss", "loss"), ("seconds", f"{stage}_seconds")):
        if name in metrics:
            numbers[key] = float(metrics[name])  # type: ignore[literal-required]  # One of StageNumbers' keys.
    entry: ClientEntry = {"cid": proxy.cid}
    if stage == "fit":
        entry["fit"] = numbers
    else:
        entry["evaluate"] = numbers
    if "partition_id" in metrics:
        entry["partition_id"] = int(metrics["partition_id"])
    participant = metrics.get(defaults.PARTICIPANT_KEY)
    if isinstance(participant, str):
        entry["participant"] = participant
    node = metrics.get(defaults.NODE_KEY)
    if isinstance(node, str):
        entry["node"] = node
    return entry


def describe_failure(failure: tuple[ClientProxy, FitRes | EvaluateRes] | BaseException) -> str:
    """One readable line for a round's failure, never empty.

    Flower reports a client that disconnected mid-round as a bare
    ``GrpcBridgeClosed()`` with no message, also when its server ended the
    client's stream for not answering within the round's timeout (the client
    then sees ``DEADLINE_EXCEEDED``); and a client's own error as a result
    whose status is not OK.
    """
    if isinstance(failure, tuple):
        proxy, result = failure
        return f"{client_name(proxy, result)}: {result.status.message or result.status.code.name}"
    if isinstance(failure, RejectedResult):
        return f"rejected: {failure}"
    name = type(failure).__name__
    if name == "GrpcBridgeClosed":
        return "a client disconnected during the round (crashed, stopped or lost its connection) or was cut off at --round-timeout"
    if isinstance(failure, TimeoutError):
        return f"a client did not answer in time (--round-timeout){': ' + str(failure) if str(failure) else ''}"
    return f"{name}: {failure}" if str(failure) else name


def _log_failures(server_round: int, stage: str, failures: Failures) -> None:
    """Say on the console what went wrong, once per reason; rejections were logged by the validation already."""
    reasons = Counter(describe_failure(failure) for failure in failures if not isinstance(failure, RejectedResult))
    for reason, count in reasons.items():
        clients = f" ({count} clients)" if count > 1 else ""
        log.warning("round %d: %s failed%s: %s", server_round, stage, clients, reason)


def progress_line(record: RoundRecord, num_rounds: int, elapsed: float, rounds_timed: int | None = None) -> str:
    """``round 3/40 | held-out acc 91.2% | 3/3 clients | clients acc 90.5% loss 0.312 | 1.1 s/round | 3 s elapsed, ~41 s left``.

    ``3/3 clients``: clients whose training was aggregated, of those connected as the round began.
    A round that aggregated none says ``0/3 clients: NO UPDATE ACCEPTED (3 rejected, 0 failed), model
    unchanged`` instead of the clients' numbers (they evaluated the same model again).
    A differentially private run adds ``| epsilon 2.31 (delta 1e-05)``, the privacy spent so far, after the loss.

    ``elapsed`` is the time ``rounds_timed`` rounds took (all rounds so far unless given).
    """
    done = record["round"]
    timed = rounds_timed or done
    left = elapsed / timed * (num_rounds - done) if timed else math.nan
    answered = f" | {record['fit_results']}/{record['connected_clients']} clients" if "fit_results" in record else ""
    clients = (
        f" | clients acc {_percent(record.get('evaluate', {}).get('accuracy'))}"
        f" loss {_number(record.get('evaluate', {}).get('loss'))}"
    )
    if record.get("fit_results") == 0:  # The clients evaluated an unchanged model: their numbers would look new.
        rejected = record.get("rejected_updates", 0)
        answered += (
            f": NO UPDATE ACCEPTED ({rejected} rejected, {record.get('fit_failures', 0) - rejected} failed),"
            " model unchanged"
        )
        clients = ""
    privacy = record.get("privacy")
    spent = f" | epsilon {privacy['epsilon']:.3g} (delta {privacy['delta']:g})" if privacy else ""
    # The last round's line names the final model, so two people can check they got the same one.
    checksum = f" | weights {record['weights_checksum']}" if done == num_rounds and "weights_checksum" in record else ""
    return (
        f"round {done}/{num_rounds} | held-out acc {_percent(record.get('centralized', {}).get('accuracy'))}"
        f"{answered}{clients}{spent}{checksum}"
        f" | {record['seconds']:.2f} s/round | {elapsed:.0f} s elapsed, ~{left:.0f} s left"
    )


def _slowest(metrics: list[dict[str, Scalar]], key: str) -> float:
    values = [float(m[key]) for m in metrics if key in m]
    return max(values, default=0.0)


def _percent(value: Scalar | None) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def _number(value: Scalar | None) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"
