"""The JSON the dashboard's API returns and its WebSocket sends, as pydantic models.

FastAPI uses these for the responses and for the schemas at ``/docs`` and
``/redoc``; the WebSocket events are built from them too, so both speak the same
field names. Accuracies are fractions (0.946), losses as the metric reports them,
times in seconds; a number the run could not compute (NaN) is ``null``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from fedmnist.dashboard.runs import RunSnapshot, Status
from fedmnist.results import records
from fedmnist.results.records import client_name
from fedmnist.settings.server_settings import settings_from
from fedmnist.settings.shaping import shaping_settings


class ErrorResponse(BaseModel):
    """What every failed request returns."""

    detail: str = Field(examples=["unknown run 'history_7'"])


class Evaluation(BaseModel):
    """The server's evaluation of the global model on its held-out test rows."""

    accuracy: float | None
    loss: float | None


class ClientResult(BaseModel):
    """One client's own numbers in a round."""

    name: str = Field(examples=["client 2"], description="By partition id, or Flower's id for clients that send none.")
    partition_id: int | None = None
    examples: int | None = Field(None, description="Training examples it reported.")
    fit_accuracy: float | None = Field(None, description="Its training accuracy during local fit.")
    accuracy: float | None = Field(None, description="Its accuracy on its own validation slice.")
    loss: float | None = Field(None, description="Its loss on its own validation slice.")
    update_norm: float | None = Field(None, description="Its update's length (distance from the global model).")
    update_distance_to_median: float | None = Field(
        None, description="Its update's distance to the coordinate-wise median of the round's updates."
    )
    update_cosine_to_median: float | None = Field(
        None, description="Its update's cosine with that median: below 0, it points away from the others."
    )
    defence: str | None = Field(
        None, examples=["discarded"], description="What a robust rule did with its update: kept, discarded, clipped."
    )

    @classmethod
    def from_entry(cls, entry: records.ClientEntry) -> ClientResult:
        fit, evaluate, update = entry.get("fit") or {}, entry.get("evaluate") or {}, entry.get("update") or {}
        return cls(
            name=client_name(entry),
            partition_id=entry.get("partition_id"),
            examples=fit.get("examples"),
            fit_accuracy=fit.get("accuracy"),
            accuracy=evaluate.get("accuracy"),
            loss=evaluate.get("loss"),
            update_norm=update.get("norm"),
            update_distance_to_median=update.get("distance_to_median"),
            update_cosine_to_median=update.get("cosine_to_median"),
            defence=update.get("defence"),
        )


class PrivacySpent(BaseModel):
    """A differentially private run's spending by the end of a round (``fedmnist.privacy.dp``)."""

    epsilon: float = Field(description="Epsilon spent so far, at delta.")
    delta: float
    noise_multiplier: float = Field(description="--dp-noise: noise std is this x clipping_norm / updates averaged.")
    clipping_norm: float = Field(description="--dp-clip: every update is clipped to this norm.")
    clipping: str = Field(description="Who clipped: server or client (--dp-side).")
    releases: int = Field(description="Rounds whose model was released (composed by the accountant).")
    max_epsilon: float | None = Field(None, description="--dp-max-epsilon, the budget, if any.")
    accounting: str = Field(description="How epsilon was computed.")


class RoundRecord(BaseModel):
    """One finished round, as the server logged it."""

    round: int = Field(description="Round number, from 1.")
    accuracy_distributed: float | None = Field(None, description="Clients' evaluate accuracy, weighted by examples.")
    loss_distributed: float | None = Field(None, description="Clients' evaluate loss, weighted by examples.")
    accuracy_centralized: float | None = Field(None, description="Held-out accuracy of the new global model.")
    backdoor_success: float | None = Field(
        None, description="Under --attack backdoor: the share of stamped held-out images classified as its target."
    )
    loss_centralized: float | None = Field(None, description="Held-out loss of the new global model.")
    connected_clients: int | None = Field(None, description="Clients connected as the round began.")
    fit_results: int = Field(0, description="Clients whose training update was aggregated.")
    fit_failures: int = Field(0, description="Training failures: errors, timeouts and rejected updates.")
    rejected_updates: int = Field(
        0, description="Updates dropped by the server's checks (NaN, shape, norm, metrics, counts)."
    )
    rejected_evaluations: int = Field(
        0, description="Evaluations dropped by the server's checks (loss, metrics, counts)."
    )
    evaluate_results: int = 0
    evaluate_failures: int = 0
    failure_reasons: list[str] = Field(default_factory=list, description="Up to 10 failure messages.")
    seconds: float | None = Field(None, description="Wall time of the round.")
    coordination_seconds: float | None = Field(None, description="Round time beyond local work and evaluation.")
    fit_metrics: dict[str, float | None] = Field(default_factory=dict, description="Aggregated fit metrics.")
    clients: list[ClientResult] = Field(default_factory=list, description="Each client's own numbers.")
    confusion: list[list[int]] | None = Field(
        None, description="The new global model on the held-out rows: counts of (true digit, predicted digit)."
    )
    privacy: PrivacySpent | None = Field(None, description="Differential privacy spent so far (DP runs only).")
    weights_checksum: str | None = Field(
        None, examples=["3f2a9c1b0d4e"], description="The global model after the round: same checksum, same weights."
    )

    @classmethod
    def from_record(cls, record: records.RoundRecord) -> RoundRecord:
        evaluate, centralized = record.get("evaluate") or {}, record.get("centralized") or {}
        raw: dict[str, Any] = dict(record)
        return cls(
            accuracy_distributed=evaluate.get("accuracy"),
            accuracy_centralized=centralized.get("accuracy"),
            backdoor_success=centralized.get("backdoor_success"),
            fit_metrics=record.get("fit") or {},
            clients=[ClientResult.from_entry(entry) for entry in record.get("per_client") or []],
            **{key: raw[key] for key in SHARED_KEYS if raw.get(key) is not None},
        )


RECORD_KEYS = records.RoundRecord.__required_keys__ | records.RoundRecord.__optional_keys__
# The round record's keys the API passes on under their own names (pydantic checks each value).
SHARED_KEYS = RECORD_KEYS & RoundRecord.model_fields.keys()
# The keys the API renames, and its names for them.
RENAMED = {"evaluate": "accuracy_distributed", "centralized": "accuracy_centralized", "fit": "fit_metrics"}
RENAMED |= {"per_client": "clients"}
# API fields read from inside a renamed key: the backdoor's success is one of the held-out metrics.
DERIVED = frozenset({"backdoor_success"})
# What the API leaves out: the server's timing breakdown and which metrics each client reported
# (the summary JSON has them). tests/test_records.py fails on a record key in none of the three.
LEFT_OUT = frozenset(
    {"client_fit_seconds", "client_evaluate_seconds", "centralized_seconds", "fit_reporting", "evaluate_reporting"}
)


class RunInfo(BaseModel):
    """A run in the list of runs."""

    id: str = Field(examples=["history_40"], description="Use it in /api/runs/{id} and the WebSocket.")
    name: str | None = Field(
        None,
        examples=["fedavg-iid-3c-40r-20261129-1355"],
        description="--name, or derived from the settings and the start time.",
    )
    status: Status = Field(description="waiting (for clients), running, finished or interrupted.")
    rounds_done: int
    rounds_total: int
    strategy: str | None
    model: str | None
    partition: str | None
    clients: int | None = Field(description="Clients the server was started for.")
    connected_clients: int | None = Field(description="Clients connected, as the server last logged it.")
    data_source: str | None = Field(description="Where the MNIST rows came from (OpenML or the offline subset).")
    started: str | None = Field(description="When the server started the run (ISO 8601, UTC).")
    finished: str | None
    updated: str = Field(description="When the server last wrote to the run (ISO 8601, UTC).")
    accuracy_centralized: float | None = Field(description="Latest held-out accuracy.")
    accuracy_distributed: float | None = Field(description="Latest clients' accuracy.")

    @classmethod
    def from_snapshot(cls, snapshot: RunSnapshot) -> RunInfo:
        config = snapshot.config
        last = RoundRecord.from_record(snapshot.records[-1]) if snapshot.records else None
        return cls(
            id=snapshot.run.id,
            name=snapshot.name,
            status=snapshot.status,
            rounds_done=len(snapshot.records),
            rounds_total=snapshot.rounds_total,
            strategy=config.get("strategy"),
            model=config.get("model"),
            partition=config.get("partition"),
            clients=config.get("clients"),
            data_source=snapshot.data_source,
            connected_clients=snapshot.connected_clients,
            started=snapshot.started,
            finished=snapshot.finished,
            updated=datetime.fromtimestamp(snapshot.updated, UTC).isoformat(timespec="seconds"),
            accuracy_centralized=last.accuracy_centralized if last else None,
            accuracy_distributed=last.accuracy_distributed if last else None,
        )


class RunDetail(RunInfo):
    """A run with its effective config and every finished round."""

    config: dict[str, Any] = Field(description="The server's settings for the run (server.py flags).")
    shaped_by: dict[str, Any] = Field(
        description="Of ``config``, the settings that shaped this run, in a reader's "
        "order (the rest are paths, ports and timeouts); min_clients as it came to."
    )
    initial: Evaluation | None = Field(description="The starting model on the held-out rows (round 0).")
    rounds: list[RoundRecord]
    label_histograms: list[list[int]] | None = Field(description="Examples of each digit (columns) per client (rows).")
    files: list[str] = Field(description="The run's pictures and result files: GET /api/file?run=ID&name=NAME.")

    @classmethod
    def from_snapshot(cls, snapshot: RunSnapshot) -> RunDetail:
        initial = snapshot.initial
        return cls(
            **RunInfo.from_snapshot(snapshot).model_dump(),
            config=snapshot.config,
            shaped_by=shaping_settings(settings_from(snapshot.config)) if snapshot.config else {},
            initial=Evaluation(
                accuracy=(initial.get("centralized") or {}).get("accuracy"), loss=initial.get("loss_centralized")
            )
            if initial
            else None,
            rounds=[RoundRecord.from_record(record) for record in snapshot.records],
            label_histograms=snapshot.label_histograms,
            files=snapshot.files,
        )


class Tensor(BaseModel):
    """One weight array of the model, in Keras's order (kernel, then bias, layer by layer)."""

    shape: list[int]
    dtype: str = Field(examples=["float32"])
    values: list[Any] = Field(description="Nested lists, as numpy.ndarray.tolist() gives.")


class ModelWeights(BaseModel):
    """The global model after the latest finished round."""

    run_id: str
    round: int = Field(description="The round that produced these weights.")
    model: str | None = Field(description="Architecture (--model): mlp, dense32 or cnn.")
    tensors: list[Tensor]


# WebSocket events (``/ws``). Every event has a ``type``.


class SnapshotEvent(BaseModel):
    """Sent on connect, on request, and when the followed run starts anew: the whole run (or none yet)."""

    type: Literal["snapshot"] = "snapshot"
    run: RunDetail | None


class RoundEvent(BaseModel):
    """Sent once per finished round of the followed run."""

    type: Literal["round"] = "round"
    run_id: str
    status: Status
    rounds_total: int
    record: RoundRecord


class ClientsEvent(BaseModel):
    """Sent when a client of the followed run connects or leaves."""

    type: Literal["clients"] = "clients"
    run_id: str
    connected_clients: int
    expected: int | None = Field(description="Clients the server was started for.")


class StatusEvent(BaseModel):
    """Sent when the followed run finishes or is interrupted."""

    type: Literal["status"] = "status"
    run: RunInfo


class ErrorEvent(BaseModel):
    """The answer to a message the server could not use; the connection stays open."""

    type: Literal["error"] = "error"
    error: str


class PongEvent(BaseModel):
    """The answer to ``{"type": "ping"}``."""

    type: Literal["pong"] = "pong"
