"""What a run saves: the checkpoint after each round, its results at the end, partial results when it stops.

Every file is written whole or not at all (``fedmnist.common.atomic``); where each goes is
``fedmnist.results.paths.RunPaths``.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from flwr.common import NDArrays, parameters_to_ndarrays
from flwr.server.history import History

from fedmnist.common.atomic import write_text_atomic
from fedmnist.common.cli import resume_command
from fedmnist.common.errors import UserError
from fedmnist.results.checkpoint import Checkpoint, save_checkpoint, strategy_state
from fedmnist.results.history import history_from_records, save_history
from fedmnist.results.paths import RunPaths
from fedmnist.results.plot_helper import PlotHelper
from fedmnist.results.records import Summary, now, placement_line
from fedmnist.results.tensorboard import write_scalars
from fedmnist.server.held_out import HeldOutEvaluator
from fedmnist.server.recorder import RoundRecorder
from fedmnist.server.run_strategy import RunStrategy
from fedmnist.settings.reproducibility import reproducibility
from fedmnist.settings.server_settings import ServerSettings

if TYPE_CHECKING:
    from fedmnist.model.keras_model import Trainer

log = logging.getLogger(__name__)


# The figures the run's plot helper draws, from the start of save_results; the server writes the history,
# the model and TensorBoard's file, then draws the others and the mistakes. Each side took about 0.45 s here.
HELPER_FIGURES = frozenset({"loss", "clients", "confusion"})


class RoundNotSaved(OSError):
    """A round's files (its checkpoint, its mistakes) could not be written: ``round`` says which."""

    def __init__(self, round_number: int, error: OSError) -> None:
        super().__init__(error.errno, error.strerror, error.filename)
        self.round = round_number

    def __str__(self) -> str:
        return f"its checkpoint could not be written ({self.strerror}: {self.filename})"


class RoundSaver:
    """After each round, its files: the mistakes (for the dashboard), then the checkpoint, on a thread of their own.

    Writing them takes about 6 ms a round here (the checkpoint of round 40 is 2 MB, fsynced):
    the next round need not wait for it, so they are written while its clients train. The
    round's progress line (``then``) is logged once its checkpoint is on disk: a round announced
    is a round kept. ``wait`` waits for the last round's files and raises ``RoundNotSaved`` if
    they could not be written: the run strategy calls it before it aggregates the next round,
    when it stops, and when the rounds end.
    """

    def __init__(
        self, settings: ServerSettings, data_source: str, paths: RunPaths, evaluator: HeldOutEvaluator
    ) -> None:
        self.config, self.data_source, self.paths, self.evaluator = asdict(settings), data_source, paths, evaluator
        self._writing: threading.Thread | None = None
        self._failure: BaseException | None = None

    def __call__(self, run: RunStrategy, then: Callable[[], None]) -> None:
        """Save the round ``run`` just recorded, then call ``then``; what they hold is taken now."""
        self.wait()
        recorder = run.recorder
        done = recorder.rounds[-1]["round"]
        assert recorder.parameters is not None, "a recorded round has its global model"
        mistakes = json.dumps({"round": done, "mistakes": self.evaluator.mistakes})
        checkpoint = Checkpoint(
            round=done,
            weights=parameters_to_ndarrays(recorder.parameters),
            strategy_state=copy.deepcopy(strategy_state(run.aggregator)),  # The next round may change it.
            records=list(recorder.rounds),  # Each record is complete: later rounds append new ones.
            initial=recorder.initial,
            config=self.config,
            data_source=self.data_source,
        )
        self._writing = threading.Thread(
            target=self._write, args=(mistakes, checkpoint, then), name=f"round-{done}-files", daemon=True
        )
        self._writing.start()

    def _write(self, mistakes: str, checkpoint: Checkpoint, then: Callable[[], None]) -> None:
        try:
            write_text_atomic(self.paths.mistakes, mistakes)
            save_checkpoint(self.paths.checkpoint, checkpoint)
        except OSError as error:
            self._failure = RoundNotSaved(checkpoint.round, error)
            return
        except BaseException as error:  # noqa: BLE001  A bug: raised where wait() is called, not lost here.
            self._failure = error
            return
        then()

    def wait(self) -> None:
        """Until the last round's files are written; raise what kept them from being written."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.join()
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure


def stop_early(
    paths: RunPaths,
    evaluator: HeldOutEvaluator,
    recorder: RoundRecorder,
    summary: Summary,
    reason: str,
    helper: PlotHelper | None = None,
) -> str:
    """Save what the completed rounds learned as partial results; return a sentence saying what happened."""
    if not recorder.rounds or recorder.parameters is None or not evaluator.trainer.done():
        return "No round had finished, so there is nothing to save."
    done = recorder.rounds[-1]["round"]
    summary.update({"interrupted_after_round": done, "stop_reason": reason})
    partial = paths.as_partial()
    history = history_from_records(recorder.rounds, recorder.initial)
    try:
        save_results(partial, evaluator, parameters_to_ndarrays(recorder.parameters), history, summary, helper)
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


def save_results(
    paths: RunPaths,
    evaluator: HeldOutEvaluator,
    final_weights: NDArrays,
    history: History,
    summary: Summary,
    helper: PlotHelper | None = None,
) -> None:
    """The history (pickle and JSON), the final model, TensorBoard's files and the plots; then say where they are.

    The history goes first: it is what a person would least like to lose. A
    file that cannot be written (a full disk) does not stop the others; the
    failures are reported together as one UserError at the end. The run's
    ``helper`` process, if any, draws some of the plots meanwhile.
    """
    trainer = evaluator.trainer.result()
    summary["confusion"] = summary["rounds"][-1].get("confusion") if summary.get("rounds") else None
    plots = _plots(paths, evaluator, final_weights, history, summary, helper)

    def tensorboard() -> str:
        return str(write_scalars(paths.tensorboard_dir, summary))

    def history_files() -> str:
        save_history(paths, history, summary)
        return f"{paths.pickle} and {paths.json}"

    def model() -> str:
        _save_model(trainer, final_weights, paths.model)
        return str(paths.model)

    problems = []
    for what, save in (("history", history_files), ("model", model), ("tensorboard", tensorboard), ("plots", plots)):
        try:
            log.info("%-8s %s", f"{what}:", save())
        except OSError as error:
            problems.append(f"could not write the {what} ({error.strerror or error}: {error.filename or paths.root})")
    done = summary.get("interrupted_after_round", summary.get("stopped_after_round", paths.rounds))
    if placement := placement_line(summary["rounds"]):  # Where a simulation's virtual clients trained.
        log.info(placement)
    log.info("held-out accuracy %s after round %d of %d", summary["final"].get("accuracy"), done, paths.rounds)
    if problems:
        hint = "; the disk may be full" if any("space" in problem for problem in problems) else ""
        raise UserError(f"{'; '.join(problems)}{hint}. The checkpoint {paths.checkpoint} keeps the rounds done")


def _plots(
    paths: RunPaths,
    evaluator: HeldOutEvaluator,
    final_weights: NDArrays,
    history: History,
    summary: Summary,
    helper: PlotHelper | None,
) -> Callable[[], str]:
    """Give the helper its figures now; return the call that draws the others and says where they all are.

    Without a helper, the call draws them all here.
    """
    from fedmnist.results.client_plots import plot_mistakes
    from fedmnist.results.plots import draw_figure, run_figures

    figures = run_figures(summary)
    theirs = [name for name in figures if name in HELPER_FIGURES]
    drawing = (helper or PlotHelper()).draw(theirs, history, summary, paths.plots_dir)

    def plots() -> str:
        drawn: dict[str, Path] = {}
        try:
            for name in figures:
                if name not in theirs:
                    drawn[name] = draw_figure(name, history, summary, paths.plots_dir)
            evaluator(final_weights)  # The final model's mistakes (the last round's evaluation may be of others).
            mistakes = plot_mistakes(evaluator.mistakes, evaluator.pixels, summary, paths.plots_dir)
        finally:
            drawn.update(zip(theirs, drawing()))  # Even when ours failed: the helper's answer is read.
        return ", ".join(str(path) for path in [*(drawn[name] for name in figures), mistakes])

    return plots


def prepare_saving() -> None:
    """Import what ``save_results`` draws and writes with (matplotlib, TensorBoard's summaries) and draw once,
    ahead of time: at the end of a run that took 0.3-0.5 s (matplotlib) and 0.05 s (TensorBoard) more here."""
    import tensorboard.summary.v1  # noqa: F401  What write_scalars builds each round's event with.

    import fedmnist.results.plots  # noqa: F401  It imports client_plots and matplotlib.
    from fedmnist.results.figures import warm_up

    warm_up()


def result_files(paths: RunPaths) -> tuple[Path, ...]:
    """The files of a finished run; a resumed run removes their partial versions once it has them."""
    return paths.pickle, paths.json, paths.model


def run_summary(
    settings: ServerSettings,
    data_source: str,
    histograms: np.ndarray,
    recorder: RoundRecorder,
    timings: dict[str, float],
) -> Summary:
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
        "reproducibility": reproducibility(settings),
        "label_histograms": histograms.tolist(),  # Examples of each digit (columns) per client (rows).
        "finished": now(),
        "initial": recorder.initial or {},  # Round 0: the starting model on the held-out set.
        "final": rounds[-1].get("centralized", {}) if rounds else {},
        **({"weights_checksum": rounds[-1]["weights_checksum"]} if rounds and "weights_checksum" in rounds[-1] else {}),
        "rounds": rounds,
        "timings": every_timing,
    }


def _save_model(trainer: Trainer, weights: NDArrays, path: Path) -> None:
    """The global model as a complete Keras file (TensorFlow is loaded by now: the Trainer imported it)."""
    from fedmnist.model.keras_model import save_model

    trainer.set_weights(weights)
    save_model(trainer.model, str(path))
