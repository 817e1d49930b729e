"""The server side of a run on any runtime: data, model, strategy, federation, results.

``run_server`` is what ``server.py``, sweeps and the ServerApp (``fedmnist.runtimes.server_app``)
call. Everything but the federation step is the same on every runtime; that step is the
``Federation`` the caller chose (``fedmnist.server.federation``): Flower's classic
``start_server``, the in-process Simulation Runtime or a ServerApp's Grid
(``fedmnist.runtimes``). Then it saves the History, a JSON summary, the final model and the plots.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from flwr.common import NDArrays, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerConfig
from flwr.server.history import History
from flwr.server.strategy import Strategy
from flwr.supercore.address import is_port_in_use

from fedmnist.attacks.catalogue import BACKDOOR
from fedmnist.common.cli import ignore_stop_signals
from fedmnist.common.errors import UserError
from fedmnist.common.garbage import start_up_done
from fedmnist.common.tls import load_server_certificates
from fedmnist.data.idx import find_idx_files
from fedmnist.data.partition import label_histograms, parse_partition, partition_rows
from fedmnist.data.sources import MnistData, load_mnist, validation_size
from fedmnist.privacy.dp import CLIP_TOLERANCE, DpSettings, PrivacyBudgetSpent, PrivacyLedger, private
from fedmnist.results.archive import archive_earlier_results
from fedmnist.results.checkpoint import Checkpoint, load_checkpoint, restore_strategy_state
from fedmnist.results.history import history_from_records
from fedmnist.results.live_log import LiveLogWriter
from fedmnist.results.paths import RunPaths
from fedmnist.results.plot_helper import PlotHelper
from fedmnist.results.records import Header, Summary
from fedmnist.server.baseline import train_centrally
from fedmnist.server.client_manager import WaitingClientManager
from fedmnist.server.federation import AppServer, Federation, ReconnectingServer
from fedmnist.server.held_out import HeldOutEvaluator, build_trainer
from fedmnist.server.recorder import RoundRecorder
from fedmnist.server.run_strategy import RunStrategy
from fedmnist.server.saving import (
    RoundNotSaved,
    RoundSaver,
    prepare_saving,
    result_files,
    run_summary,
    save_results,
    stop_early,
)
from fedmnist.server.strategies import build_strategy, centralized_evaluate_fn
from fedmnist.server.validation import UpdateValidator
from fedmnist.settings import defaults
from fedmnist.settings.client_config import config_for_clients
from fedmnist.settings.combinations import attack_problem, dp_problem, secagg_problem
from fedmnist.settings.reproducibility import reproducibility
from fedmnist.settings.server_settings import ServerSettings

log = logging.getLogger(__name__)


def run_server(settings: ServerSettings, process_started: float, federation: Federation) -> RunPaths:
    """Run the whole federation (or its remaining rounds, with ``resume``) and save its results.

    ``federation`` is the runtime's federation step, which the caller chose.

    The caller holds the results lock on ``settings.out`` (``fedmnist.results.run_lock``).
    A run that stops early (Ctrl-C, SIGTERM, an error in a round) saves the
    completed rounds as partial results before the exception goes on.
    """
    paths = RunPaths(Path(settings.out), settings.rounds)
    problem = dp_problem(settings) or secagg_problem(settings) or attack_problem(settings)
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
    # The simulation starts Ray now, beside the data loading and the TensorFlow import; the plot
    # helper imports matplotlib meanwhile too.
    with federation, PlotHelper() as helper:
        helper.start()
        return _run(settings, process_started, paths, checkpoint, federation, helper)


def _run(
    settings: ServerSettings,
    process_started: float,
    paths: RunPaths,
    checkpoint: Checkpoint | None,
    federation: Federation,
    helper: PlotHelper,
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
    # Unique per server run: a sweep's clients start each run afresh.
    client_config = config_for_clients(
        settings, data.source, f"{settings.strategy}/{settings.partition}/{time.time():.6f}"
    )
    # TensorFlow takes seconds to import: do it beside Flower's start-up, so the server
    # listens at once and the clients' own start-up overlaps it. The strategy, which
    # needs the initial model's weights, is built when Flower first asks for it. A runtime
    # that starts workers of its own (the simulation's Ray) has the CPU first: they import
    # TensorFlow too, and round 1 waits for theirs, not for this one (fedmnist.runtimes.simulation).
    starting = ThreadPoolExecutor(max_workers=1)
    trainer = starting.submit(build_trainer, settings.seed, settings.model, federation.workers_starting)
    # Then matplotlib and TensorBoard, while the server waits for its clients (or the simulation's
    # workers), so the results are saved sooner after the last round.
    starting.submit(prepare_saving)
    starting.submit(start_up_done)  # TensorFlow, the model and matplotlib are in (fedmnist.common.garbage).
    evaluator = HeldOutEvaluator(trainer, data, backdoor=settings.attack == BACKDOOR)
    strategy = _run_strategy(
        settings, paths, checkpoint, evaluator, client_config, max(len(part) for part in parts), data.source
    )
    header = _start_live_log(settings, paths, checkpoint, data.source, histograms)
    server_ready = time.perf_counter()

    def summary_now() -> Summary:
        finished = time.perf_counter()
        timings = {
            "server_startup_seconds": server_ready - process_started,
            "server_data_seconds": data_seconds,
            "federation_seconds": finished - server_ready,
            "server_total_seconds": finished - process_started,
        }
        summary = run_summary(settings, data.source, histograms, strategy.recorder, timings)
        return {**summary, "started": header["started"], "name": header["name"]}  # Paired with the live log's.

    history, final_weights = _federate_or_save_the_rounds(
        settings, strategy, client_config(0), paths, evaluator, federation, summary_now, helper
    )
    _finish(settings, paths, checkpoint, strategy, evaluator, data, history, final_weights, summary_now(), helper)
    return paths


def _run_strategy(
    settings: ServerSettings,
    paths: RunPaths,
    checkpoint: Checkpoint | None,
    evaluator: HeldOutEvaluator,
    client_config: Callable[[int], dict[str, Scalar]],
    largest_share: int,
    data_source: str,
) -> RunStrategy:
    """The run's strategy: each round validated, aggregated by the Flower strategy, recorded and checkpointed."""
    dp = DpSettings.of(settings)
    return RunStrategy(
        lambda: _build_strategy(settings, evaluator, client_config, checkpoint),
        validator=UpdateValidator(
            max_norm_factor=settings.max_update_norm_factor,
            max_fit_examples=largest_share - validation_size(largest_share),
            max_evaluate_examples=validation_size(largest_share),
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
        on_round_end=RoundSaver(settings, data_source, paths, evaluator),
        ledger=_privacy_ledger(dp, settings.clients, checkpoint) if dp else None,
        compares_updates=not settings.secagg,
    )


def _start_live_log(
    settings: ServerSettings, paths: RunPaths, checkpoint: Checkpoint | None, data_source: str, histograms: np.ndarray
) -> Header:
    """Write the live log's header (a resumed run keeps its log and its name); the dashboard shows it at once."""
    started = datetime.now(UTC)
    name = settings.name or (checkpoint.config.get("name") if checkpoint else None) or settings.default_name(started)
    header: Header = {
        "config": asdict(settings),
        "data_source": data_source,
        "started": started.isoformat(timespec="seconds"),
        "resumed_after_round": checkpoint.round if checkpoint else 0,
        "name": name,
        "label_histograms": histograms.tolist(),
        "reproducibility": reproducibility(settings),
    }
    LiveLogWriter(paths.round_log).start(header, resume=checkpoint is not None)
    return header


def _federate_or_save_the_rounds(
    settings: ServerSettings,
    strategy: RunStrategy,
    client_config: dict[str, Scalar],
    paths: RunPaths,
    evaluator: HeldOutEvaluator,
    federation: Federation,
    summary_now: Callable[[], Summary],
    helper: PlotHelper,
) -> tuple[History | None, NDArrays]:
    """The rounds; if they stop early, the completed ones saved as partial results and the reason raised."""
    recorder = strategy.recorder

    def saved_early(reason: str) -> str:
        # Flower may drive the rounds from another thread (the simulation): no round after this, and
        # the last round's checkpoint on disk first.
        strategy.stop()
        return stop_early(paths, evaluator, recorder, summary_now(), reason, helper)

    try:
        history, final_weights = _federate(
            settings, strategy, client_config, settings.rounds - strategy.resumed_after, paths.round_log, federation
        )
        strategy.wait_for_saving()  # The last round's checkpoint and progress line.
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C or SIGTERM (fedmnist.common.cli.take_back_stop_signals).
        ignore_stop_signals()  # A second Ctrl-C must not cut the saving short.
        log.warning(saved_early("stopped by a signal (Ctrl-C or SIGTERM)"))
        raise
    except UserError as error:  # E.g. too few clients connected.
        raise UserError(f"{error}. {saved_early(str(error))}") from None
    except Exception as error:  # A bug or a full disk inside a round: never hang, never lose the rounds done.
        if isinstance(error, RoundNotSaved):
            failed = f"round {error.round} failed: {error}"
        else:
            failed = f"round {recorder.current_round} failed: {type(error).__name__}: {error}"
        log.debug("%s", failed, exc_info=True)  # The traceback, with --verbose.
        raise RunFailed(f"{failed}. {saved_early(failed)}") from error
    if strategy.stalled:  # A run that trains nothing must not end as finished.
        raise UserError(f"{strategy.stalled}. {saved_early(strategy.stalled)}")
    return history, final_weights


def _finish(
    settings: ServerSettings,
    paths: RunPaths,
    checkpoint: Checkpoint | None,
    strategy: RunStrategy,
    evaluator: HeldOutEvaluator,
    data: MnistData,
    history: History | None,
    final_weights: NDArrays,
    summary: Summary,
    helper: PlotHelper,
) -> None:
    """After the last round: the privacy spent, a budget stop, the baseline; then every result saved."""
    recorder = strategy.recorder
    # Flower's History has only this process's rounds (none after a budget stop); ours has all.
    if history is None or checkpoint is not None or strategy.budget_stop:
        history = history_from_records(recorder.rounds, recorder.initial)
    if strategy.ledger is not None:
        summary["privacy"] = strategy.ledger.record()
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
        # As many epochs as the federation ran rounds: a budget stop ends it before --rounds.
        summary["baseline"] = train_centrally(data, settings, rounds=len(recorder.rounds))
        log.info("centralized baseline: held-out accuracy %.3f", summary["baseline"]["accuracy"][-1][1])
    save_results(paths, evaluator, final_weights, history, summary, helper)
    for stale in result_files(paths.as_partial()):  # A resumed run is complete now.
        stale.unlink(missing_ok=True)


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


def _build_strategy(
    settings: ServerSettings,
    evaluator: HeldOutEvaluator,
    client_config: Callable[[int], dict[str, Scalar]],
    checkpoint: Checkpoint | None,
) -> Strategy:
    """The configured Flower strategy, starting from the initial model or the checkpoint."""
    start = checkpoint.weights if checkpoint else evaluator.trainer.result().get_weights()
    strategy = build_strategy(
        settings,
        start,
        evaluate_fn=centralized_evaluate_fn(evaluator, evaluator.extra_metrics),
        on_fit_config_fn=client_config,
    )
    if checkpoint is not None:
        restore_strategy_state(strategy, checkpoint.strategy_state)
        strategy.initial_parameters = ndarrays_to_parameters(start)  # Continue from the checkpoint.
        log.info("resuming after round %d of %d from its checkpoint", checkpoint.round, settings.rounds)
    dp = DpSettings.of(settings)
    return private(strategy, dp) if dp else strategy


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
        seed=settings.seed,
    )
    server_class = ReconnectingServer if settings.keep_clients else AppServer
    server = server_class(client_manager=manager, strategy=strategy)
    server_config = ServerConfig(num_rounds=num_rounds, round_timeout=settings.round_timeout)
    history = federation.run(server, server_config, client_config)
    return history, parameters_to_ndarrays(server.parameters)
