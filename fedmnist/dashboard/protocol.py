"""The JSON messages of ``WS /ws``, where WebSocket participants join the federation.

A participant is any program that speaks this protocol: the browser page
``/client`` (TensorFlow.js), ``examples/ws_client.py`` (NumPy), or your own.
One conversation, participant (P) and server (S):

1. P ``join`` -> S ``welcome`` (the participant's partition), or an ``error``.
2. Before its first instruction, S ``data``: the partition's pixels and labels.
3. Each round S ``fit`` (global weights and config) -> P ``fit_result``;
   S ``evaluate`` -> P ``evaluate_result``.
4. S ``end`` when the run is over (or the participant cannot take part), then closes.

A malformed message gets an ``error`` and the connection stays open; a
participant may then send a corrected answer. The models here are the
protocol's single source: the server parses with them, ``/docs`` lists them.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from fedmnist.dashboard.schemas import Tensor
from fedmnist.settings import defaults

# A JSON float written by Python or JavaScript takes at most about 24 characters
# ("-0.00012345678901234567,"), so a model's weights fit in this many bytes each.
BYTES_PER_WEIGHT = 26
MESSAGE_OVERHEAD = 64 * 1024  # Everything around the weights: keys, metrics, shapes.
MAX_NAME_CHARS = 64


class BadMessage(ValueError):
    """A participant's message that cannot be used; its text is sent back as an ``error`` event."""


# Participant -> server.


class JoinMessage(BaseModel):
    """Take a place in the federation: the first message of every participant."""

    type: Literal["join"]
    name: str | None = Field(None, max_length=MAX_NAME_CHARS, description="Shown in the dashboard's log, e.g. 'tab 1'.")
    partition: int | None = Field(None, description="Ask for this partition id; default: the lowest free one.")


class FitResultMessage(BaseModel):
    """The answer to ``fit``: the locally trained weights, in the shapes that were sent."""

    type: Literal["fit_result"]
    round: int
    weights: list[Tensor]
    num_examples: int = Field(ge=0, le=2**31, description="Rows trained on: FedAvg's weight for this update.")
    metrics: dict[str, float] = Field(default_factory=dict, examples=[{"accuracy": 0.91, "loss": 0.31}])


class EvaluateResultMessage(BaseModel):
    """The answer to ``evaluate``: the global model's loss and metrics on the participant's validation rows."""

    type: Literal["evaluate_result"]
    round: int
    loss: float
    num_examples: int = Field(ge=0, le=2**31)
    metrics: dict[str, float] = Field(default_factory=dict, examples=[{"accuracy": 0.9}])


class PingMessage(BaseModel):
    """Answered with ``pong``."""

    type: Literal["ping"]


ParticipantMessage = Annotated[
    JoinMessage | FitResultMessage | EvaluateResultMessage | PingMessage, Field(discriminator="type")
]
_PARTICIPANT_MESSAGE: TypeAdapter[Any] = TypeAdapter(ParticipantMessage)

# Server -> participant.


class WelcomeMessage(BaseModel):
    """The participant's place: it trains on partition ``partition`` of ``num_partitions`` (known at ``data``)."""

    type: Literal["welcome"] = "welcome"
    partition: int
    flower_server: str = Field(description="The Flower server this participant is a client of.")


class Rows(BaseModel):
    """Images and labels: ``pixels`` is base64 of ``count`` x 784 uint8 values (0-255), row by row."""

    count: int
    pixels: str
    labels: list[int]


class DataMessage(BaseModel):
    """The participant's partition, cut by the server exactly as ``client.py`` would cut it."""

    type: Literal["data"] = "data"
    partition: int
    num_partitions: int
    scheme: str = Field(description="How rows were split among clients: iid, dirichlet:ALPHA or shards:K.")
    dataset: str
    train: Rows
    validation: Rows


class FitMessage(BaseModel):
    """Train the global ``weights`` on the local training rows as ``config`` says, answer ``fit_result``.

    ``config`` holds ``local-epochs``, ``batch-size`` and ``learning-rate`` (Adam),
    and the run's settings (``model``, ``seed``, ...). The model is a dense
    network read off the shapes: ReLU between layers, softmax at the end.
    """

    type: Literal["fit"] = "fit"
    round: int
    weights: list[Tensor]
    config: dict[str, Any]


class EvaluateMessage(BaseModel):
    """Evaluate the global ``weights`` on the local validation rows, answer ``evaluate_result``."""

    type: Literal["evaluate"] = "evaluate"
    round: int
    weights: list[Tensor]
    config: dict[str, Any]


class EndMessage(BaseModel):
    """The conversation is over; the server closes the connection after this."""

    type: Literal["end"] = "end"
    reason: str
    finished: bool = Field(
        description="True when the run completed; False when this participant could not take part or lost the server."
    )


class ParticipantError(BaseModel):
    """A message could not be used, or a round could not be answered; the connection stays open."""

    type: Literal["error"] = "error"
    error: str


class PongMessage(BaseModel):
    type: Literal["pong"] = "pong"


MESSAGE_MODELS: tuple[type[BaseModel], ...] = (
    JoinMessage,
    FitResultMessage,
    EvaluateResultMessage,
    PingMessage,
    WelcomeMessage,
    Rows,
    DataMessage,
    FitMessage,
    EvaluateMessage,
    EndMessage,
    ParticipantError,
    PongMessage,
)


def decode_json_object(text: str) -> dict[str, Any]:
    """``text`` as a JSON object with a string ``type``, or BadMessage saying why not."""
    try:
        message = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadMessage(f"not JSON: {error.msg} at character {error.pos}") from None
    except (ValueError, RecursionError) as error:  # A 5,000-digit number; arrays nested 100,000 deep.
        raise BadMessage(f"not usable JSON: {type(error).__name__}: {str(error)[:100]}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise BadMessage('expected a JSON object with a "type", e.g. {"type": "ping"}')
    return message


def parse_participant_message(text: str) -> JoinMessage | FitResultMessage | EvaluateResultMessage | PingMessage:
    """One participant message, validated; BadMessage with the first problem otherwise."""
    message = decode_json_object(text)
    try:
        return _PARTICIPANT_MESSAGE.validate_python(message)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise BadMessage(f"{where}: {first['msg']}{more}") from None


def tensors(weights: list[np.ndarray]) -> list[Tensor]:
    """Weights as the protocol's tensors (shape, dtype, nested values)."""
    return [Tensor(shape=list(array.shape), dtype=str(array.dtype), values=array.tolist()) for array in weights]


def arrays(sent: list[Tensor], expected: list[tuple[int, ...]]) -> list[np.ndarray]:
    """A participant's tensors as float32 arrays, checked against the shapes it was sent.

    Values must be numbers (JSON's, not strings or booleans); whether they are
    finite is for the server's update validation to judge, as for every client.
    """
    if len(sent) != len(expected):
        raise BadMessage(f"weights: expected {len(expected)} tensors, got {len(sent)}")
    result = []
    for index, (tensor, shape) in enumerate(zip(sent, expected, strict=True)):
        try:
            array = np.array(tensor.values)
        except (ValueError, TypeError, RecursionError):
            raise BadMessage(f"weights.{index}: values are not a rectangular array") from None
        if array.shape != shape:
            raise BadMessage(f"weights.{index}: expected shape {list(shape)}, got {list(array.shape)}")
        if tuple(tensor.shape) != shape:
            raise BadMessage(f"weights.{index}: the shape field says {tensor.shape}, the values are {list(shape)}")
        if array.dtype.kind not in "iuf":
            raise BadMessage(f"weights.{index}: values must be numbers")
        result.append(array.astype(np.float32))
    return result


def dense_layer_sizes(shapes: list[tuple[int, ...]]) -> list[int] | None:
    """The layer widths (784, ..., 10) when ``shapes`` are a dense network's kernels and biases, else None."""
    if len(shapes) < 2 or len(shapes) % 2:
        return None
    sizes = [defaults.IMAGE_PIXELS]
    for kernel, bias in zip(shapes[::2], shapes[1::2], strict=True):
        if len(kernel) != 2 or kernel[0] != sizes[-1] or bias != (kernel[1],):
            return None
        sizes.append(kernel[1])
    return sizes if sizes[-1] == defaults.NUM_CLASSES else None


def message_cap(weight_count: int) -> int:
    """Largest message, in bytes, a participant needs to send for a model of ``weight_count`` weights."""
    return MESSAGE_OVERHEAD + BYTES_PER_WEIGHT * weight_count


def rows(pixels: np.ndarray, labels: np.ndarray) -> Rows:
    """Images (n x 784 uint8) and labels as the protocol sends them."""
    return Rows(
        count=len(labels),
        pixels=base64.b64encode(np.ascontiguousarray(pixels, np.uint8).tobytes()).decode("ascii"),
        labels=[int(label) for label in labels],
    )
