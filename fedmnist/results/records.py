"""The records a run writes, one typed shape per kind, and the one reader of its summary; no Flower import.

Writers and readers share these shapes, so a key renamed in one place is a type
error in the other (mypy runs in ``./test.sh``):

- ``Header``: the first line of the live log (``fedmnist.results.live_log``) and of each resumption;
- ``Evaluation``: the global model on the held-out set; ``{"initial": Evaluation}`` is round 0;
- ``RoundRecord``: one finished round (``fedmnist.server.recorder`` writes it), with a
  ``ClientEntry`` per client;
- ``Summary``: ``history/history_N.json``, the run's last word (``fedmnist.server.saving``
  writes it, ``read_summary`` reads it for the History, the dashboard, the sweep, the
  archive and the launcher).

The files are JSON: these are ``TypedDict`` s, so a record is the plain dict the
file holds. The dashboard's API models (``fedmnist.dashboard.schemas``) are built
from them and checked against them (``tests/test_records.py``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Required, TypedDict, cast

from fedmnist.common.errors import UserError
from fedmnist.settings.reproducibility import Reproducibility


class Header(TypedDict, total=False):
    """The first line of a run's live log (and of each resumption)."""

    config: dict[str, Any]  # ServerSettings, as saved with the results.
    data_source: str  # The concrete source: openml or mnist-5k.
    started: str  # ISO time (UTC); the summary has the same, so readers pair the two.
    resumed_after_round: int
    name: str
    label_histograms: list[list[int]]  # Examples of each digit (columns) per client (rows).
    reproducibility: Reproducibility  # Whether the same seed gives this run again, and why (not).


class StageNumbers(TypedDict, total=False):
    """A client's numbers for one stage (fit or evaluate) of a round."""

    examples: int
    accuracy: float
    loss: float
    seconds: float


class UpdateNumbers(TypedDict, total=False):
    """How a client's accepted update compares with the round's others (``fedmnist.server.update_stats``)."""

    norm: float  # Its length: the distance from the global model it started from.
    distance_to_median: float  # To the coordinate-wise median of the round's updates.
    cosine_to_median: float  # With that median: below 0 points away from the round's updates.
    defence: str  # What the robust aggregation did with it: kept, discarded, clipped x0.42.


class ClientEntry(TypedDict, total=False):
    """One client's part in a round: by partition id when it sends one, else by Flower's id."""

    cid: Required[str]
    partition_id: int
    participant: str  # A WebSocket participant's name.
    node: str  # The Ray node (its address) a virtual client trained on.
    fit: StageNumbers
    evaluate: StageNumbers
    update: UpdateNumbers


class PrivacySpent(TypedDict, total=False):
    """A differentially private run's spending by the end of a round (``fedmnist.privacy.dp``)."""

    epsilon: float
    delta: float
    noise_multiplier: float
    clipping_norm: float
    clipping: str  # server or client (--dp-side).
    releases: int
    max_epsilon: float | None
    accounting: str


class Evaluation(TypedDict, total=False):
    """The global model on the server's held-out rows."""

    centralized: dict[str, Any]  # accuracy, loss.
    centralized_seconds: float
    loss_centralized: float
    confusion: list[list[int]] | None  # Counts of (true digit, predicted digit).


class RoundRecord(Evaluation, total=False):
    """One finished round; ``seconds`` runs from its start (after sampling) to its last evaluation."""

    round: Required[int]
    connected_clients: int  # As the round began.
    fit: dict[str, Any]  # The aggregated fit metrics.
    fit_results: int
    fit_reporting: dict[str, int]  # Clients that reported each metric.
    fit_failures: int
    rejected_updates: int
    failure_reasons: list[str]
    client_fit_seconds: float  # The slowest client's local time.
    privacy: PrivacySpent
    loss_distributed: float | None
    evaluate: dict[str, Any]  # The aggregated evaluate metrics.
    evaluate_results: int
    evaluate_reporting: dict[str, int]
    evaluate_failures: int
    rejected_evaluations: int
    client_evaluate_seconds: float
    per_client: list[ClientEntry]
    weights_checksum: str  # The global model after the round (fedmnist.model.checksum).
    seconds: float
    coordination_seconds: float  # What the round cost beyond local work and the held-out evaluation.


class Summary(TypedDict, total=False):
    """``history/history_N.json``: the run's settings, every round, its timings and the History inside."""

    config: dict[str, Any]
    data_source: str
    reproducibility: Reproducibility
    label_histograms: list[list[int]]
    started: str  # The live log header's, so readers pair the two.
    name: str
    finished: str
    initial: Evaluation
    final: dict[str, Any]  # The last round's held-out metrics.
    weights_checksum: str  # The final model's: its last round's.
    rounds: list[RoundRecord]
    timings: dict[str, float | None]
    confusion: list[list[int]] | None
    privacy: PrivacySpent
    stopped: str  # Why a DP run stopped before its last round (its budget).
    stopped_after_round: int
    interrupted_after_round: int  # A partial summary: the run was stopped.
    stop_reason: str
    baseline: dict[str, Any]  # The centralized baseline's curve (--baseline).
    history: dict[str, Any]  # fedmnist.results.history.history_to_dict


def read_summary(path: str | os.PathLike[str]) -> Summary:
    """The summary at ``path``; an unreadable or foreign file raises UserError with one line."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read history {path}: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("history", {}), dict):
        raise UserError(f"{path} is not a fedmnist history summary")
    return cast(Summary, document)  # JSON is untyped; the shape is the writer's.


def now() -> str:
    """This moment in UTC, to the second, as every record writes times."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def client_name(client: ClientEntry | dict[str, Any]) -> str:
    """``client 2`` by partition id, ``client 4 (web: alice)`` for a WebSocket participant, or ``client 3f9a1c``
    by Flower's id for clients that send no partition id."""
    partition_id, participant = client.get("partition_id"), client.get("participant")
    if partition_id is None:
        return f"client {str(client.get('cid', '?'))[:6]}"
    return f"client {int(partition_id)}" + (f" (web: {participant})" if participant else "")


def placement_line(rounds: list[RoundRecord]) -> str:
    """``virtual clients trained on 2 Ray nodes: 10.0.0.1 (12 fits), 10.0.0.2 (8 fits)``; "" if none said where."""
    fits = Counter(c["node"] for r in rounds for c in r.get("per_client", []) if "fit" in c and "node" in c)
    if not fits:
        return ""
    nodes = ", ".join(f"{node} ({count} fits)" for node, count in sorted(fits.items()))
    return f"virtual clients trained on {len(fits)} Ray node{'s' if len(fits) > 1 else ''}: {nodes}"


UNKNOWN_PARTITION = 1 << 30  # Sorts after every real partition id: a client that names none, or a bad one.


def partition_of(said: Mapping[str, Any]) -> int:
    """The partition id a client reported (its metrics or properties, ``partition_id``), or ``UNKNOWN_PARTITION``."""
    partition = said.get("partition_id")
    if isinstance(partition, int) and not isinstance(partition, bool) and partition >= 0:
        return partition
    return UNKNOWN_PARTITION


def client_order(client: ClientEntry | dict[str, Any]) -> tuple[int, str]:
    """Clients by partition id (client 2 before client 10), then Flower's id: the order of every legend."""
    return (partition_of(client), str(client.get("cid", "")))
