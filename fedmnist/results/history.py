"""Saving and reading a run's results: the History pickle, its JSON summary and the live log.

Where each file goes is ``fedmnist.results.paths.RunPaths``; the live JSONL log is
``fedmnist.results.live_log``'s. Every file here is replaced atomically.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

from flwr.server.history import History

from fedmnist.common.atomic import write_atomic, write_text_atomic
from fedmnist.common.errors import UserError
from fedmnist.results.paths import RunPaths
from fedmnist.results.records import Evaluation, RoundRecord, Summary, read_summary

# History attributes, in the order Flower declares them.
_SERIES = ("losses_distributed", "losses_centralized")
_METRICS = ("metrics_distributed_fit", "metrics_distributed", "metrics_centralized")


def history_to_dict(history: History) -> dict[str, Any]:
    """A JSON-ready copy of a Flower History: ``{"losses_centralized": [[round, value], ...], ...}``."""
    data: dict[str, Any] = {name: [list(pair) for pair in getattr(history, name)] for name in _SERIES}
    for name in _METRICS:
        data[name] = {key: [list(pair) for pair in pairs] for key, pairs in getattr(history, name).items()}
    return data


def history_from_dict(data: dict[str, Any]) -> History:
    """Rebuild a Flower History from ``history_to_dict`` output."""
    history = History()
    for name in _SERIES:
        setattr(history, name, [tuple(pair) for pair in data.get(name, [])])
    for name in _METRICS:
        setattr(history, name, {key: [tuple(pair) for pair in pairs] for key, pairs in data.get(name, {}).items()})
    return history


def history_from_records(records: list[RoundRecord], initial: Evaluation | None) -> History:
    """Rebuild the History Flower's server builds, from our per-round records.

    A resumed run has no single Flower History covering all its rounds; this
    one does, and equals Flower's for an uninterrupted run (see the tests).
    """
    history = History()
    if initial:
        history.add_loss_centralized(0, initial["loss_centralized"])
        history.add_metrics_centralized(0, initial["centralized"])
    for record in records:
        server_round = record["round"]
        history.add_metrics_distributed_fit(server_round, record.get("fit", {}))
        if "centralized" in record:
            history.add_loss_centralized(server_round, record["loss_centralized"])
            history.add_metrics_centralized(server_round, record["centralized"])
        loss = record.get("loss_distributed")
        if loss is not None:
            history.add_loss_distributed(server_round, loss)
            history.add_metrics_distributed(server_round, record.get("evaluate", {}))
    return history


def save_history(paths: RunPaths, history: History, summary: Summary) -> None:
    """Write the pickled History and the JSON summary (with the History inside), atomically."""
    write_atomic(paths.pickle, lambda handle: pickle.dump(history, handle))
    document = {**summary, "history": history_to_dict(history)}
    write_text_atomic(paths.json, json.dumps(document, indent=2, sort_keys=True, allow_nan=True) + "\n")


def load_history(path: str | os.PathLike[str]) -> tuple[History, Summary]:
    """Read a run from its JSON summary; returns the History and the summary.

    Given a ``.pkl``, the ``.json`` beside it is read instead: the pickle is
    for people's own scripts, and unpickling a file can run code, so no tool
    of this project loads one. Unreadable files raise UserError.
    """
    path = Path(path)
    summary_path = path.with_suffix(".json")
    if path.suffix == ".pkl" and not summary_path.exists():
        raise UserError(
            f"cannot read history {path}: fedmnist reads the summary {summary_path.name} beside it "
            "(it never unpickles files), and there is none"
        )
    summary = read_summary(summary_path)
    try:
        return history_from_dict(summary.get("history", {})), summary
    except (TypeError, ValueError, AttributeError) as error:
        raise UserError(f"{summary_path} holds a malformed history: {error}") from None
