"""One participant's seat in the Flower federation: a classic (grpc-bidi) client connection.

``server.py`` talks to every client over one bidirectional gRPC stream
(Flower's ``FlowerService.Join``): it sends an instruction (a ``ServerMessage``:
fit, evaluate, get-properties, get-parameters or reconnect) and the client
answers each with the matching ``ClientMessage``. ``FlowerLink`` speaks that
protocol with Flower's own protobuf messages and converters, so to the server a
WebSocket participant is one more client: sampled, timed out, validated,
aggregated and recorded like ``client.py``.

Why not ``flwr.client.start_client``: it cannot be stopped from outside while it
waits for the server's next instruction, and a participant that closes its tab
must leave the federation at once (``close``), before the next round samples it.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import Literal

import grpc
from flwr.common import (
    Code,
    EvaluateRes,
    FitRes,
    GetParametersRes,
    GetPropertiesRes,
    NDArrays,
    Parameters,
    Scalar,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
    serde,
)
from flwr.proto.transport_pb2 import ClientMessage, Reason, ServerMessage
from flwr.proto.transport_pb2_grpc import FlowerServiceStub

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # Far above any model here; gRPC's default of 4 MB is not.


@dataclass(frozen=True)
class Instruction:
    """A fit or evaluate request from the server: the global weights and the round's config."""

    kind: Literal["fit", "evaluate"]
    weights: NDArrays
    config: dict[str, Scalar]


class FlowerLink:
    """A client connection to a classic Flower server; ``next_instruction`` blocks, the rest do not.

    Every method but ``next_instruction`` may be called from any thread. The
    connection opens at once; ``next_instruction`` raises ``grpc.RpcError``
    (``UNAVAILABLE``) when no server listens at ``address``.
    """

    def __init__(self, address: str, root_certificate: bytes | None = None) -> None:
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
        if root_certificate is None:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificate)
            self._channel = grpc.secure_channel(address, credentials, options=options)
        self._replies: queue.Queue[ClientMessage | None] = queue.Queue()
        self._instructions = FlowerServiceStub(self._channel).Join(iter(self._replies.get, None))

    def next_instruction(self) -> Instruction | None:
        """The server's next fit or evaluate; None when it ends the run (or the stream ends).

        Property and parameter requests are answered here: a participant has no
        properties, and its weights are only ever the server's own.
        """
        for message in self._instructions:
            field = message.WhichOneof("msg")
            if field == "fit_ins":
                fit = serde.fit_ins_from_proto(message.fit_ins)
                return Instruction("fit", parameters_to_ndarrays(fit.parameters), dict(fit.config))
            if field == "evaluate_ins":
                evaluate = serde.evaluate_ins_from_proto(message.evaluate_ins)
                return Instruction("evaluate", parameters_to_ndarrays(evaluate.parameters), dict(evaluate.config))
            if field == "reconnect_ins":
                self._replies.put(ClientMessage(disconnect_res=ClientMessage.DisconnectRes(reason=Reason.ACK)))
                return None
            self._answer_request(message)
        return None

    def _answer_request(self, message: ServerMessage) -> None:
        if message.WhichOneof("msg") == "get_properties_ins":
            properties = GetPropertiesRes(Status(Code.OK, ""), {})
            self._replies.put(ClientMessage(get_properties_res=serde.get_properties_res_to_proto(properties)))
        else:
            refused = Status(Code.GET_PARAMETERS_NOT_IMPLEMENTED, "a WebSocket participant has no weights of its own")
            parameters = GetParametersRes(refused, Parameters([], "numpy.ndarray"))
            self._replies.put(ClientMessage(get_parameters_res=serde.get_parameters_res_to_proto(parameters)))

    def send_fit(self, weights: NDArrays, num_examples: int, metrics: dict[str, Scalar]) -> None:
        result = FitRes(Status(Code.OK, "Success"), ndarrays_to_parameters(weights), num_examples, metrics)
        self._replies.put(ClientMessage(fit_res=serde.fit_res_to_proto(result)))

    def send_evaluate(self, loss: float, num_examples: int, metrics: dict[str, Scalar]) -> None:
        result = EvaluateRes(Status(Code.OK, "Success"), loss, num_examples, metrics)
        self._replies.put(ClientMessage(evaluate_res=serde.evaluate_res_to_proto(result)))

    def send_failure(self, kind: Literal["fit", "evaluate"], reason: str) -> None:
        """Answer the pending instruction with a failed status: the server counts it as this round's failure."""
        if kind == "fit":
            failed = FitRes(Status(Code.FIT_NOT_IMPLEMENTED, reason), Parameters([], "numpy.ndarray"), 0, {})
            self._replies.put(ClientMessage(fit_res=serde.fit_res_to_proto(failed)))
        else:
            refused = EvaluateRes(Status(Code.EVALUATE_NOT_IMPLEMENTED, reason), 0.0, 0, {})
            self._replies.put(ClientMessage(evaluate_res=serde.evaluate_res_to_proto(refused)))

    def close(self) -> None:
        """Leave the federation: the server drops this client; a blocked ``next_instruction`` raises."""
        self._replies.put(None)
        self._channel.close()
