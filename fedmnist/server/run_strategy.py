"""The run's one Flower strategy: each round, validate -> aggregate -> record -> checkpoint -> announce.

Flower calls a strategy at fixed points of a round (configure fit, aggregate
fit, evaluate on the server, configure and aggregate evaluate). ``RunStrategy``
does, at each point and in this order, what the app adds to the configured
Flower strategy (``fedmnist.server.strategies.build_strategy``, the *aggregator*):

0. **order**: the results in partition-id order (``canonical_order``), whatever order
   they arrived in: floating-point sums depend on the order of their terms, so the
   same updates always make the same bits of the next model;
1. **validate**: every client result is checked (``fedmnist.server.validation``);
   rejected ones reach the aggregator and the record only as failures;
2. **aggregate**: the aggregator (FedAvg or a variant) decides everything
   Flower decides: sampling, the new weights, the metrics; the new weights
   keep the model's own dtypes (FedAdam and FedYogi compute in float64, and
   float64 global weights would make validation refuse every float32 update);
3. **record**: the round's numbers go to the live log, with how each client's
   update compared with the others' (``fedmnist.server.update_stats``), (``fedmnist.server.recorder``),
   with the privacy spent so far when the run is differentially private
   (``ledger``, ``fedmnist.privacy.dp``: a round that would spend past the
   budget is not started, ``PrivacyBudgetSpent``);
4. **checkpoint**: ``on_round_end`` saves the run so far (``fedmnist.results.checkpoint``),
   while the next round begins (``fedmnist.server.saving.RoundSaver``: its files are written
   on a thread of their own, and the next round's aggregation waits for them);
5. **announce**: then, once the checkpoint is on disk, the progress line: a round
   announced is a round kept.

A run whose last ``defaults.MAX_ROUNDS_WITHOUT_UPDATE`` rounds accepted no
update trains nothing: it ends with ``TrainingStalled`` (``stalled`` says why)
rather than running on as if it learned.

Round numbers are the run's own: Flower counts each process's rounds from 1,
so a run resumed after round ``resumed_after`` is shifted here, in one place.
Round 0, the starting model's evaluation, stays 0.

``stop()`` ends a run whose rounds Flower drives from another thread (the
simulation's): a round being recorded is finished first, its files written, and
every later step raises ``RunStopped``, which ends Flower's server there. The
completed rounds can then be saved without a round changing them meanwhile.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import numpy as np
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from fedmnist.privacy.dp import PrivacyBudgetSpent, PrivacyLedger
from fedmnist.results.records import partition_of
from fedmnist.server.client_manager import WaitingClientManager
from fedmnist.server.recorder import RoundRecorder
from fedmnist.server.update_stats import update_numbers
from fedmnist.server.validation import UpdateValidator
from fedmnist.settings import defaults


class RoundSaving(Protocol):
    """What ``on_round_end`` is: it saves a recorded round, then calls ``then`` (the round's progress line)."""

    def __call__(self, run: RunStrategy, then: Callable[[], None]) -> None: ...

    def wait(self) -> None:
        """Until the last round's files are written; raise what kept them from being written."""


log = logging.getLogger(__name__)
_CLIENT_PREFIX = re.compile(r"^(rejected: )?client [^:]*: ")  # Who, in a failure reason: grouped by what.
STOP_WAIT_SECONDS = 30.0  # At most this long for a step to finish recording before a stop.


Result = TypeVar("Result", FitRes, EvaluateRes)


def canonical_order(results: list[tuple[ClientProxy, Result]]) -> list[tuple[ClientProxy, Result]]:
    """``results`` by the partition id each client reports (then Flower's client id), not by arrival.

    A result without a usable partition id (a client of another app, a hostile one)
    goes last; only clients that claim the same id can still swap places.
    """

    return sorted(results, key=lambda pair: (partition_of(pair[1].metrics), str(pair[0].cid)))


class RunStopped(Exception):
    """The run was stopped (``RunStrategy.stop``); Flower's server ends with this at its next step."""


class TrainingStalled(Exception):
    """Several rounds in a row accepted no update: the run ends (``RunStrategy.stalled`` says why)."""


class RunStrategy(Strategy):
    """Validates, aggregates (with the aggregator ``build()`` returns), records and checkpoints each round.

    Parameters
    ----------
    build : Callable[[], Strategy]
        Makes the aggregator, on first use rather than here: the server passes a
        function that waits for TensorFlow to build the initial model, so
        Flower's gRPC server can listen (and clients connect) meanwhile.
    validator : UpdateValidator
        Checks each round's results before they are aggregated.
    recorder : RoundRecorder
        Keeps each round's record and the latest global weights.
    resumed_after : int (default 0)
        The last round a resumed run had done; Flower's round 1 is this run's ``resumed_after + 1``.
    on_round_end : RoundSaving | None
        Saves the run after each round's record, then logs its progress line (the checkpoint).
    ledger : PrivacyLedger | None
        The privacy spent, for a differentially private run (the aggregator is then Flower's DP wrapper).
    compares_updates : bool (default True)
        Record how each client's update compares with the others'; not under SecAgg+, where none is seen alone.
    """

    def __init__(
        self,
        build: Callable[[], Strategy],
        *,
        validator: UpdateValidator,
        recorder: RoundRecorder,
        resumed_after: int = 0,
        on_round_end: RoundSaving | None = None,
        ledger: PrivacyLedger | None = None,
        compares_updates: bool = True,
    ) -> None:
        self._build = build
        self.compares_updates = compares_updates  # False under SecAgg+: every result is the same masked sum.
        self._aggregator: Strategy | None = None
        self.validator = validator
        self.recorder = recorder
        self.resumed_after = resumed_after
        self.on_round_end = on_round_end
        self.ledger = ledger
        self.budget_stop = ""  # Why the run ended before its last round, when its privacy budget did it.
        self.stalled = ""  # Why the run ended before its last round, when no update was accepted for rounds.
        self._dtypes: list[np.dtype[Any]] = []  # The model's own, from the initial weights.
        self._recording = threading.Lock()  # Held while a step changes the record; stop() waits for it.
        self._stopped = False

    def __repr__(self) -> str:
        return f"RunStrategy({self._aggregator!r})"

    @property
    def aggregator(self) -> Strategy:
        """The configured Flower strategy, built the first time it is needed."""
        if self._aggregator is None:
            self._aggregator = self._build()
        return self._aggregator

    def stop(self) -> None:
        """Let a round being recorded finish, then refuse every later step with ``RunStopped``."""
        # Bounded: a Ctrl-C landing between a step's taking of the lock and its ``with`` block
        # would leave the lock held by the thread now calling this.
        finished = self._recording.acquire(timeout=STOP_WAIT_SECONDS)
        self._stopped = True
        if finished:
            self._recording.release()
        try:
            self.wait_for_saving()
        except OSError as error:  # Said here: the run is stopping anyway, with the rounds that were saved.
            log.warning("the last round's files: %s", error)

    def wait_for_saving(self) -> None:
        """Until the last recorded round's files are written; raise ``RoundNotSaved`` if they could not be."""
        if self.on_round_end is not None:
            self.on_round_end.wait()

    @contextmanager
    def _step(self) -> Iterator[None]:
        """A step that changes the record, unless the run was stopped; ``stop`` never cuts it in half."""
        with self._recording:
            self._refuse_if_stopped()
            yield

    def _refuse_if_stopped(self) -> None:
        if self._stopped:
            raise RunStopped("the run was stopped")

    def _run_round(self, server_round: int) -> int:
        return server_round + self.resumed_after if server_round else 0

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        self.recorder.parameters = self.aggregator.initialize_parameters(client_manager)
        if self.recorder.parameters is not None:
            self._dtypes = [array.dtype for array in parameters_to_ndarrays(self.recorder.parameters)]
        return self.recorder.parameters

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        server_round = self._run_round(server_round)
        self._refuse_if_stopped()
        self.validator.start_round(parameters)
        if isinstance(client_manager, WaitingClientManager):  # Sampled by the run's seed, this round.
            client_manager.sampling_for(server_round, "fit")
        # Sampling blocks until enough clients are connected: the round starts after it.
        instructions = self.aggregator.configure_fit(server_round, parameters, client_manager)
        if self.ledger is not None and instructions:
            try:  # Before any client trains: a round not started spends nothing.
                self.ledger.check(len(instructions))
            except PrivacyBudgetSpent as spent:
                self.budget_stop = str(spent)
                raise
        self.recorder.start_round(server_round, connected_clients=len(client_manager.all()))
        return instructions

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        server_round = self._run_round(server_round)
        self.wait_for_saving()  # The last round's files, written meanwhile: this round goes on from them.
        with self._step():
            accepted, rejected = self.validator.check_updates(server_round, canonical_order(results))
            failures = [*failures, *rejected]
            parameters, metrics = self.aggregator.aggregate_fit(server_round, accepted, failures)
            parameters = self._in_model_dtypes(parameters)
            decisions = getattr(self.aggregator, "decisions", {})  # A robust rule's (fedmnist.server.defences).
            updates = update_numbers(self.validator.round_start, accepted, decisions) if self.compares_updates else {}
            self.recorder.fitted(server_round, accepted, failures, parameters, metrics, updates)
            if self.ledger is not None:
                if parameters is not None:  # A new global model was released.
                    self.ledger.spend(len(accepted))
                self.recorder.privacy(self.ledger.record())
        return parameters, metrics

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        server_round = self._run_round(server_round)
        with self._step():
            started = self.recorder.clock()
            result = self.aggregator.evaluate(server_round, parameters)
            if result is not None:
                self.recorder.evaluated_centrally(server_round, result, self.recorder.clock() - started)
        return result

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        self._refuse_if_stopped()
        server_round = self._run_round(server_round)
        if isinstance(client_manager, WaitingClientManager):
            client_manager.sampling_for(server_round, "evaluate")
        return self.aggregator.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(
        self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]], failures: list[Any]
    ) -> tuple[float | None, dict[str, Scalar]]:
        server_round = self._run_round(server_round)
        with self._step():
            accepted, rejected = self.validator.check_evaluations(server_round, canonical_order(results))
            failures = [*failures, *rejected]
            loss, metrics = self.aggregator.aggregate_evaluate(server_round, accepted, failures)
            record = self.recorder.evaluated(server_round, accepted, failures, loss, metrics)
            if self.on_round_end is not None:
                self.on_round_end(self, lambda: self.recorder.announce(record))
            else:
                self.recorder.announce(record)
        self._end_if_stalled()
        return loss, metrics

    def _in_model_dtypes(self, parameters: Parameters | None) -> Parameters | None:
        """``parameters`` cast to the model's dtypes, whatever dtypes the aggregator computed in."""
        if parameters is None or not self._dtypes:
            return parameters
        arrays = parameters_to_ndarrays(parameters)
        if len(arrays) != len(self._dtypes) or all(a.dtype == d for a, d in zip(arrays, self._dtypes)):
            return parameters
        return ndarrays_to_parameters([a.astype(d, copy=False) for a, d in zip(arrays, self._dtypes)])

    def _end_if_stalled(self) -> None:
        """Raise ``TrainingStalled`` when the last ``MAX_ROUNDS_WITHOUT_UPDATE`` rounds accepted no update."""
        limit = defaults.MAX_ROUNDS_WITHOUT_UPDATE
        last = self.recorder.rounds[-limit:]
        if len(last) < limit or any(record.get("fit_results", 0) for record in last):
            return
        reasons = Counter(
            _CLIENT_PREFIX.sub(r"\1", reason)
            for record in last
            for reason in record.get("failure_reasons", [])
            if not reason.startswith("evaluation: ")
        )
        said = "; ".join(f"{reason} ({count}x)" if count > 1 else reason for reason, count in reasons.most_common(3))
        self.stalled = (
            f"rounds {last[0]['round']}-{last[-1]['round']} accepted no update, so the model stopped "
            f"learning ({said or 'no client answered'})"
        )
        raise TrainingStalled(self.stalled)
