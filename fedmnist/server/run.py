"""The server side of a run on any runtime: data, model, strategy, federation, results.

``run_server`` is what ``server.py``, sweeps and the ServerApp (``fedmnist.runtimes.server_app``)
call. Everything but the federation step is the same on every runtime; that step is the
``Federation`` the caller chose (``fedmnist.server.federation``): Flower's classic
``start_server``, the in-process Simulation Runtime or a ServerApp's Grid
(``fedmnist.runtimes``). Then it saves the History, a JSON summary, the final model and the plots.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.common import NDArrays, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerConfig
from flwr.server.history import History
from flwr.server.strategy import Strategy
from flwr.supercore.address import is_port_in_use

from fedmnist.common.atomic import write_text_atomic
from fedmnist.common.cli import ignore_stop_signals, resume_command
from fedmnist.common.errors import UserError
from fedmnist.common.tls import load_server_certificates
from fedmnist.data.idx import find_idx_files
from fedmnist.data.partition import label_histograms, parse_partition, partition_rows
from fedmnist.data.sources import MnistData, load_mnist, to_float, validation_size
from fedmnist.privacy.dp import CLIP_TOLERANCE, DpSettings, PrivacyBudgetSpent, PrivacyLedger, private
from fedmnist.results.archive import archive_earlier_results
from fedmnist.results.checkpoint import (
    Checkpoint,
    load_checkpoint,
    restore_strategy_state,
    save_checkpoint,
    strategy_state,
)
from fedmnist.results.history import history_from_records, save_history
from fedmnist.results.live_log import Header, LiveLogWriter
from fedmnist.results.paths import RunPaths
from fedmnist.results.tensorboard import write_scalars
from fedmnist.server.baseline import train_centrally
from fedmnist.server.client_manager import WaitingClientManager
from fedmnist.server.federation import AppServer, Federation, ReconnectingServer
from fedmnist.server.mistakes import confusion_matrix, worst_mistakes
from fedmnist.server.recorder import RoundRecorder
from fedmnist.server.run_strategy import RunStrategy
from fedmnist.server.strategies import build_strategy, centralized_evaluate_fn, fit_config
from fedmnist.server.validation import UpdateValidator
from fedmnist.settings import defaults
from fedmnist.settings.server_settings import ServerSettings, dp_problem, secagg_problem

if TYPE_CHECKING:
    from fedmnist.model.keras_model import Trainer

log = logging.getLogger(__name__)


def run_server(settings: ServerSettings, process_started: float, federation: Federation) -> RunPaths:
    """Run the whole federation (or its remaining rounds, with ``resume``) and save its results.

    ``federation`` is the runtime's federation step, which the caller chose.

    The caller holds the results lock on ``settings.out`` (``fedmnist.results.run_lock``).
    A run that stops early (Ctrl-C, SIGTERM, an error in a round) saves the
    completed rounds as partial results before the exception goes on.
    """
    paths = RunPaths(Path(settings.out), settings.rounds)
    problem = dp_problem(settings) or secagg_problem(settings)
    if problem:  # The flags were checked already; a ServerApp's run config was not.
        raise UserError(problem)
    if settings.runtime == "classic" and is_port_in_use(settings.address):
        raise UserError(f"port {settings.port} is already in use (another server running? choose --port)")
    checkpoint = load_checkpoint(paths.checkpoint, asdict(settings)) if settings.resume else None
    if settings.tls_dir:
        load_server_certificates(settings.tls_dir)  # Refuse bad certificate files before any work.
    if settings.dataset.startswith(defaults.IDX_PREFIX):  # Its files exist, before earlier results move.
        find_idx_files(settings.dataset[len(defaults.IDX_PREFIX) :])
    if not settings.resume:
        archived = archive_earlier_results(paths.root)
        if archived is not None:
            log.info("the earlier run's results in %s were moved to %s", paths.root, archived)
    paths.check_writable()
    # The simulation starts Ray now, beside the data loading and the TensorFlow import.
    with federation:
        return _run(settings, process_started, paths, checkpoint, federation)


def _run(
    settings: ServerSettings,
    process_started: float,
    paths: RunPaths,
    checkpoint: Checkpoint | None,
    federation: Federation,
) -> RunPaths:
    """``run_server`` once its checks passed: data, model, strategy, the rounds through ``federation``, results."""
    data_started = time.perf_counter()
    data = load_mnist(settings.dataset, settings.data_home)
    data_seconds = time.perf_counter() - data_started
    log.info(
        "data: %s, %d training rows for the clients, %d held-out test rows for the server",
        data.source,
        len(data.y_train),
        len(data.y_test),
    )
    # The clients cut the same partition from the same seed; the server counts labels, and the
    # largest shares bound the example counts clients may claim (fedmnist.server.validation).
    parts = partition_rows(data.y_train, settings.clients, parse_partition(settings.partition), settings.seed)
    histograms = label_histograms(data.y_train, parts)
    largest = max(len(part) for part in parts)

    client_config = _client_config(settings, data.source)
    dp = DpSettings.of(settings)
    ledger = _privacy_ledger(dp, settings.clients, checkpoint) if dp else None
    # TensorFlow takes seconds to import: do it beside Flower's start-up, so the server
    # listens at once and the clients' own start-up overlaps it. The strategy, which
    # needs the initial model's weights, is built when Flower first asks for it. A runtime
    # that starts workers of its own (the simulation's Ray) has the CPU first: they import
    # TensorFlow too, and round 1 waits for theirs, not for this one (fedmnist.runtimes.simulation).
    trainer = ThreadPoolExecutor(max_workers=1).submit(
        _build_trainer, settings.seed, settings.model, federation.workers_starting
    )
    evaluator = HeldOutEvaluator(trainer, data)
    strategy = RunStrategy(
        lambda: _build_strategy(settings, evaluator, client_config, checkpoint),
        validator=UpdateValidator(
            max_norm_factor=settings.max_update_norm_factor,
            max_fit_examples=largest - validation_size(largest),
            max_evaluate_examples=validation_size(largest),
            # The server enforces the clipping it asked the clients for (fedmnist.privacy.dp).
            max_norm=dp.clip * CLIP_TOLERANCE if dp and dp.side == "client" else None,
        ),
        recorder=RoundRecorder(
            num_rounds=settings.rounds,
            log_path=paths.round_log,
            earlier_rounds=checkpoint.records if checkpoint else None,
            initial=checkpoint.initial if checkpoint else None,
            centralized_extras=lambda: {"confusion": evaluator.confusion},
        ),
        resumed_after=checkpoint.round if checkpoint else 0,
        on_round_end=_checkpointer(settings, data.source, paths, evaluator),
        ledger=ledger,
    )
    recorder = strategy.recorder
    done = strategy.resumed_after
    started = datetime.now(UTC)
    name = settings.name or (checkpoint.config.get("name") if checkpoint else None) or settings.default_name(started)
    header: Header = {
        "config": asdict(settings),
        "data_source": data.source,
        "started": started.isoformat(timespec="seconds"),
        "resumed_after_round": done,
        "name": name,
        "label_histograms": histograms.tolist(),
    }  # The dashboard shows them while the run goes.
    LiveLogWriter(paths.round_log).start(header, resume=checkpoint is not None)
    server_ready = time.perf_counter()

    def summary_now() -> dict[str, Any]:
        finished = time.perf_counter()
        return {
            **_summary(
                settings,
                data.source,
                histograms,
                recorder,
                {
                    "server_startup_seconds": server_ready - process_started,
                    "server_data_seconds": data_seconds,
                    "federation_seconds": finished - server_ready,
                    "server_total_seconds": finished - process_started,
                },
            ),
            "started": header["started"],
            "name": name,
        }  # "started" matches the live log's header: readers pair the two.

    try:
        history, final_weights = _federate(
            settings, strategy, client_config(0), settings.rounds - done, paths.round_log, federation
        )
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C or SIGTERM (fedmnist.common.cli.take_back_stop_signals).
        ignore_stop_signals()  # A second Ctrl-C must not cut the saving short.
        strategy.stop()  # Flower may drive the rounds from another thread (the simulation): no round after this.
        log.warning(_stop_early(paths, evaluator, recorder, summary_now(), "stopped by a signal (Ctrl-C or SIGTERM)"))
        raise
    except UserError as error:  # E.g. too few clients connected.
        raise UserError(f"{error}. {_stop_early(paths, evaluator, recorder, summary_now(), str(error))}") from None
    except Exception as error:  # A bug or a full disk inside a round: never hang, never lose the rounds done.
        failed = f"round {recorder.current_round} failed: {type(error).__name__}: {error}"
        log.debug("%s", failed, exc_info=True)  # The traceback, with --verbose.
        raise RunFailed(f"{failed}. {_stop_early(paths, evaluator, recorder, summary_now(), failed)}") from error
    if strategy.stalled:  # A run that trains nothing must not end as finished.
        raise UserError(
            f"{strategy.stalled}. {_stop_early(paths, evaluator, recorder, summary_now(), strategy.stalled)}"
        )
    # Flower's History has only this process's rounds (none after a budget stop); ours has all.
    if history is None or checkpoint is not None or strategy.budget_stop:
        history = history_from_records(recorder.rounds, recorder.initial)
    summary = summary_now()
    if ledger is not None:
        summary["privacy"] = ledger.record()
    if strategy.budget_stop:
        summary["stopped"] = strategy.budget_stop
        summary["stopped_after_round"] = len(recorder.rounds)
        log.warning(
            "%s: stopped after round %d of %d; the results are saved",
            strategy.budget_stop,
            len(recorder.rounds),
            settings.rounds,
        )
    if settings.baseline:
        log.info("training the centralized baseline (--baseline) on the clients' rows ...")
        summary["baseline"] = train_centrally(
            # As many epochs as the federation ran rounds: a budget stop ends it before --rounds.
            data,
            num_clients=settings.clients,
            rounds=len(recorder.rounds),
            seed=settings.seed,
            partition=settings.partition,
            model=settings.model,
            local_epochs=settings.local_epochs,
            batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
        )
        log.info("centralized baseline: held-out accuracy %.3f", summary["baseline"]["accuracy"][-1][1])
    _save_results(paths, evaluator, final_weights, history, summary)
    for stale in _result_files(paths.as_partial()):  # A resumed run is complete now.
        stale.unlink(missing_ok=True)
    return paths


class RunFailed(UserError):
    """A round failed with an unexpected error; the rounds before it were saved."""


def _privacy_ledger(dp: DpSettings, population: int, checkpoint: Checkpoint | None) -> PrivacyLedger:
    """The run's privacy ledger, with a resumed run's earlier rounds spent; refuses a budget no round fits in."""
    earlier = checkpoint.records[-1].get("privacy", {}).get("releases", 0) if checkpoint and checkpoint.records else 0
    ledger = PrivacyLedger(dp, population, releases=int(earlier))
    try:
        ledger.check(population)
    except PrivacyBudgetSpent as spent:
        raise UserError(f"{spent}: no round can run; raise --dp-max-epsilon or --dp-noise") from None
    return ledger


def _client_config(settings: ServerSettings, data_source: str) -> Callable[[int], dict[str, Scalar]]:
    """The config every fit and evaluate message carries: the run's settings for the clients, and the round."""
    return fit_config(
        local_epochs=settings.local_epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        keep_optimizer=settings.keep_optimizer,
        partition=settings.partition,
        run_id=f"{settings.strategy}/{settings.partition}/{time.time():.6f}",  # Unique per server run.
        client_settings={
            "num-partitions": settings.clients,
            "seed": settings.seed,
            "model": settings.model,
            "dataset": data_source,
        },
    )


def _build_strategy(
    settings: ServerSettings,
    evaluator: HeldOutEvaluator,
    client_config: Callable[[int], dict[str, Scalar]],
    checkpoint: Checkpoint | None,
) -> Strategy:
    """The configured Flower strategy, starting from the initial model or the checkpoint."""
    start = checkpoint.weights if checkpoint else evaluator.trainer.result().get_weights()
    strategy = build_strategy(
        name=settings.strategy,
        num_clients=settings.clients,
        min_clients=settings.minimum_clients,
        initial_weights=start,
        fraction_fit=settings.fraction_fit,
        fraction_evaluate=settings.fraction_evaluate,
        proximal_mu=settings.proximal_mu,
        server_momentum=settings.server_momentum,
        server_learning_rate=settings.server_learning_rate,
        evaluate_fn=centralized_evaluate_fn(evaluator),
        on_fit_config_fn=client_config,
    )
    if checkpoint is not None:
        restore_strategy_state(strategy, checkpoint.strategy_state)
        strategy.initial_parameters = ndarrays_to_parameters(start)  # Continue from the checkpoint.
        log.info("resuming after round %d of %d from its checkpoint", checkpoint.round, settings.rounds)
    dp = DpSettings.of(settings)
    return private(strategy, dp) if dp else strategy


def _checkpointer(
    settings: ServerSettings, data_source: str, paths: RunPaths, evaluator: HeldOutEvaluator
) -> Callable[[RunStrategy], None]:
    """After each round: save its mistakes for the dashboard, then checkpoint the run."""

    def save(run: RunStrategy) -> None:
        recorder = run.recorder
        done = recorder.rounds[-1]["round"]
        assert recorder.parameters is not None, "a recorded round has its global model"
        write_text_atomic(paths.mistakes, json.dumps({"round": done, "mistakes": evaluator.mistakes}))
        save_checkpoint(
            paths.checkpoint,
            Checkpoint(
                round=done,
                weights=parameters_to_ndarrays(recorder.parameters),
                strategy_state=strategy_state(run.aggregator),
                records=recorder.rounds,
                initial=recorder.initial,
                config=asdict(settings),
                data_source=data_source,
            ),
        )

    return save


def _stop_early(
    paths: RunPaths, evaluator: HeldOutEvaluator, recorder: RoundRecorder, summary: dict[str, Any], reason: str
) -> str:
    """Save what the completed rounds learned as partial results; return a sentence saying what happened."""
    if not recorder.rounds or recorder.parameters is None or not evaluator.trainer.done():
        return "No round had finished, so there is nothing to save."
    done = recorder.rounds[-1]["round"]
    summary.update(interrupted_after_round=done, stop_reason=reason)
    partial = paths.as_partial()
    history = history_from_records(recorder.rounds, recorder.initial)
    try:
        _save_results(partial, evaluator, parameters_to_ndarrays(recorder.parameters), history, summary)
    except UserError as error:
        return f"Stopped after round {done} of {paths.rounds}; {error}"
    return stopped_sentence(paths, done)


def stopped_sentence(paths: RunPaths, done: int) -> str:
    """What a run stopped after round ``done`` saved, and how to go on."""
    partial = paths.as_partial()
    return (
        f"Stopped after round {done} of {paths.rounds}: the completed rounds are saved as {partial.pickle.name}, "
        f"{partial.json.name} and {partial.model.name}; to continue the run: {resume_command()}"
    )


def _save_results(
    paths: RunPaths, evaluator: HeldOutEvaluator, final_weights: NDArrays, history: History, summary: dict[str, Any]
) -> None:
    """The history (pickle and JSON), the final model, the plots and TensorBoard's files; then say where they are.

    The history goes first: it is what a person would least like to lose. A
    file that cannot be written (a full disk) does not stop the others; the
    failures are reported together as one UserError at the end.
    """
    trainer = evaluator.trainer.result()
    summary["confusion"] = summary["rounds"][-1].get("confusion") if summary.get("rounds") else None

    def plots() -> str:
        from fedmnist.results.plots import (
            plot_clients,
            plot_confusion,
            plot_history,
            plot_label_histograms,
            plot_mistakes,
            plot_privacy,
            privacy_curve,
        )

        folder = paths.plots_dir
        drawn = [
            *plot_history(history, summary, folder),
            plot_label_histograms(summary, folder),
            plot_clients(summary, folder),
        ]
        if summary["confusion"]:
            drawn.append(plot_confusion(summary["confusion"], summary, folder))
        if privacy_curve(summary["rounds"]):
            drawn.append(plot_privacy(summary, folder))
        evaluator(final_weights)  # The final model's mistakes (the last round's evaluation may be of others).
        drawn.append(plot_mistakes(evaluator.mistakes, evaluator.pixels, summary, folder))
        return ", ".join(str(path) for path in drawn)

    def tensorboard() -> str:
        return str(write_scalars(paths.tensorboard_dir, summary))

    def history_files() -> str:
        save_history(paths, history, summary)
        return f"{paths.pickle} and {paths.json}"

    def model() -> str:
        _save_model(trainer, final_weights, paths.model)
        return str(paths.model)

    problems = []
    for what, save in (("history", history_files), ("model", model), ("plots", plots), ("tensorboard", tensorboard)):
        try:
            log.info("%-8s %s", f"{what}:", save())
        except OSError as error:
            problems.append(f"could not write the {what} ({error.strerror or error}: {error.filename or paths.root})")
    done = summary.get("interrupted_after_round", summary.get("stopped_after_round", paths.rounds))
    log.info("held-out accuracy %s after round %d of %d", summary["final"].get("accuracy"), done, paths.rounds)
    if problems:
        hint = "; the disk may be full" if any("space" in problem for problem in problems) else ""
        raise UserError(f"{'; '.join(problems)}{hint}. The checkpoint {paths.checkpoint} keeps the rounds done")


def _result_files(paths: RunPaths) -> tuple[Path, ...]:
    return paths.pickle, paths.json, paths.model


def _build_trainer(seed: int, model: str, after: Future[None] | None = None) -> Trainer:
    """The server's Trainer of ``model`` (TensorFlow's import: seconds), once ``after`` is done if given."""
    if after is not None:
        after.exception()  # Waits; an error there is the federation step's to raise.
    from fedmnist.model.keras_model import Trainer, build_model

    return Trainer(build_model(seed, model), seed=seed)


class HeldOutEvaluator:
    """The global model on the server's held-out rows: ``weights -> (loss, accuracy)`` for Flower.

    Each call also keeps, from the same pass, the confusion matrix (``confusion``,
    which the round's record carries) and the misclassified rows the model was
    surest of (``mistakes``, with their pixels: the dashboard draws them).
    """

    def __init__(self, trainer: Future[Trainer], data: MnistData) -> None:
        self.trainer = trainer
        self.pixels = data.x_test  # uint8, for pictures of the mistakes.
        self.x_test, self.y_test = to_float(data.x_test), data.y_test.astype("int32")
        self.confusion: list[list[int]] | None = None
        self.mistakes: list[dict[str, Any]] = []

    def __call__(self, weights: NDArrays) -> tuple[float, float]:
        model = self.trainer.result()  # Waits for the TensorFlow import, the first time only.
        model.set_weights(weights)
        result, probabilities = model.evaluate_with_probabilities(self.x_test, self.y_test)
        self.confusion = confusion_matrix(self.y_test, probabilities.argmax(axis=1))
        self.mistakes = [
            {**mistake, "pixels": self.pixels[mistake["index"]].tolist()}
            for mistake in worst_mistakes(self.y_test, probabilities)
        ]
        return result.loss, result.accuracy


def _save_model(trainer: Trainer, weights: NDArrays, path: Path) -> None:
    from fedmnist.model.keras_model import save_model

    trainer.set_weights(weights)
    save_model(trainer.model, str(path))


def _federate(
    settings: ServerSettings,
    strategy: Strategy,
    client_config: dict[str, Scalar],
    num_rounds: int,
    round_log: Path,
    federation: Federation,
) -> tuple[History | None, NDArrays]:
    """Run ``num_rounds`` rounds with ``federation``; return Flower's History (if it gives one) and the final weights.

    Each client connecting or leaving appends ``{"connected_clients": N, "time": ...}``
    to the live log, so the dashboard shows clients arriving before round 1.
    """
    manager = WaitingClientManager(
        timeout=settings.client_timeout,
        expected=settings.clients,
        minimum=settings.minimum_clients,
        on_change=LiveLogWriter(round_log).connected,
    )
    server_class = ReconnectingServer if settings.keep_clients else AppServer
    server = server_class(client_manager=manager, strategy=strategy)
    server_config = ServerConfig(num_rounds=num_rounds, round_timeout=settings.round_timeout)
    history = federation.run(server, server_config, client_config)
    return history, parameters_to_ndarrays(server.parameters)


def _summary(
    settings: ServerSettings,
    data_source: str,
    histograms: np.ndarray,
    recorder: RoundRecorder,
    timings: dict[str, float],
) -> dict[str, Any]:
    """The JSON document saved beside the pickled History."""
    rounds = recorder.rounds
    every_timing: dict[str, float | None] = {
        **timings,
        **{f"client_{key}": value for key, value in recorder.client_timings.items()},
        "rounds_seconds": sum(r["seconds"] for r in rounds),
        "client_fit_seconds": sum(r.get("client_fit_seconds", 0.0) for r in rounds),
        "client_evaluate_seconds": sum(r.get("client_evaluate_seconds", 0.0) for r in rounds),
        "centralized_evaluate_seconds": sum(r.get("centralized_seconds", 0.0) for r in rounds),
        "first_round_started_at": recorder.first_round_started_at,  # Unix time.
        "coordination_seconds_per_round": sum(r["coordination_seconds"] for r in rounds) / max(1, len(rounds)),
    }
    return {
        "config": asdict(settings),
        "data_source": data_source,
        "label_histograms": histograms.tolist(),  # Examples of each digit (columns) per client (rows).
        "finished": _now(),
        "initial": recorder.initial or {},  # Round 0: the starting model on the held-out set.
        "final": rounds[-1].get("centralized", {}) if rounds else {},
        "rounds": rounds,
        "timings": every_timing,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
