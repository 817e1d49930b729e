"""The held-out confusion matrix and mistakes, and the TensorBoard event files, with values checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmnist.results.records import Summary
from fedmnist.results.tensorboard import scalars, write_scalars
from fedmnist.server.mistakes import confusion_matrix, worst_mistakes


def probabilities_for(predicted: list[int], confidence: list[float]) -> np.ndarray:
    """Rows whose largest probability is ``confidence`` at ``predicted``, the rest shared equally."""
    rows = np.full((len(predicted), 10), 0.0)
    for row, (digit, sure) in enumerate(zip(predicted, confidence)):
        rows[row] = (1 - sure) / 9
        rows[row, digit] = sure
    return rows


def test_confusion_matrix_counts_true_by_predicted() -> None:
    labels = np.array([0, 1, 1, 7])
    matrix = confusion_matrix(labels, np.array([0, 1, 0, 1]))
    assert matrix[0][0] == 1 and matrix[1][1] == 1 and matrix[1][0] == 1 and matrix[7][1] == 1
    assert sum(map(sum, matrix)) == 4 and len(matrix) == 10 and len(matrix[0]) == 10


def test_worst_mistakes_are_the_surest_wrong_answers_first() -> None:
    labels = np.array([3, 3, 5, 8])
    probabilities = probabilities_for([3, 8, 6, 0], [0.99, 0.6, 0.95, 0.7])
    mistakes = worst_mistakes(labels, probabilities, count=2)
    assert [(m["index"], m["true"], m["predicted"]) for m in mistakes] == [(2, 5, 6), (3, 8, 0)]
    assert mistakes[0]["confidence"] == pytest.approx(0.95)


SUMMARY: Summary = {
    "initial": {"centralized": {"accuracy": 0.11, "loss": 2.3}},
    "rounds": [
        {
            "round": 1,
            "centralized": {"accuracy": 0.8},
            "evaluate": {"accuracy": 0.78, "loss": float("nan")},
            "fit": {"accuracy": 0.75},
            "seconds": 0.5,
            "fit_results": 2,
            "per_client": [
                {
                    "cid": "x",
                    "partition_id": 1,
                    "fit": {"accuracy": 0.7, "examples": 450},
                    "evaluate": {"accuracy": 0.77},
                }
            ],
        },
        {"round": 2, "centralized": {"accuracy": 0.9}, "seconds": 0.4},
    ],
}


def test_scalars_cover_rounds_averages_and_each_client_and_skip_nan() -> None:
    points = {(tag, step): value for tag, value, step in scalars(SUMMARY)}
    assert points[("held_out/accuracy", 0)] == 0.11 and points[("held_out/accuracy", 2)] == 0.9
    assert points[("clients_validation/accuracy", 1)] == 0.78 and ("clients_validation/loss", 1) not in points
    assert points[("client_1/fit_examples", 1)] == 450 and points[("client_1/evaluate_accuracy", 1)] == 0.77
    assert points[("round/seconds", 2)] == 0.4 and points[("round/fit_results", 1)] == 2


def test_event_files_hold_the_run_and_a_rewrite_replaces_them(tmp_path: Path) -> None:
    import tensorflow as tf

    folder = write_scalars(tmp_path / "tensorboard" / "history_2", SUMMARY)
    write_scalars(folder, SUMMARY)  # A resumed run writes the whole run again: no duplicates.
    files = list(folder.glob("events.out.tfevents.*"))
    assert len(files) == 1
    read, plugins, events = {}, set(), 0
    for event in tf.compat.v1.train.summary_iterator(str(files[0])):
        events += bool(event.summary.value)
        for value in event.summary.value:
            read[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
            plugins.add(value.metadata.plugin_data.plugin_name)
    assert plugins == {"scalars"}  # What TensorBoard's Scalars tab shows.
    assert events == len({step for _, _, step in scalars(SUMMARY)})  # One event per round, not one per number.
    assert read[("held_out/accuracy", 2)] == pytest.approx(0.9)
    assert read[("client_1/evaluate_accuracy", 1)] == pytest.approx(0.77)
    assert len(read) == len(scalars(SUMMARY))
