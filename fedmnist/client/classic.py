"""``client.py``'s client: a ``PartitionClient`` in its own process, connected to a classic Flower server.

``make_client`` builds it (TensorFlow loads while the server starts), ``GuardedClient`` refuses a
run whose settings differ from the client's own, and ``run_client`` serves it with Flower's
``start_client`` (grpc-bidi), retrying an unreachable server until ``--connect-timeout``.
"""

from __future__ import annotations

import importlib
import logging
import time

import grpc
from flwr.client import Client
from flwr.common import (
    Code,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetParametersIns,
    GetParametersRes,
    GetPropertiesIns,
    GetPropertiesRes,
    Parameters,
    Scalar,
    Status,
)

from fedmnist.client.flower_client import ClientCache, PartitionClient, SettingsMismatch
from fedmnist.common.errors import UserError
from fedmnist.common.tls import speaks_tls

log = logging.getLogger(__name__)
RETRY_SECONDS = 0.5  # Pause between attempts to reach an unreachable server.


def make_client(
    *,
    partition_id: int,
    num_partitions: int,
    data_home: str | None = None,
    process_started: float | None = None,
    fault: str | None = None,
) -> PartitionClient:
    """``client.py``'s client: partition ``partition_id`` of ``num_partitions``, its state kept in this process.

    ``process_started`` (a ``time.perf_counter()`` reading taken when the
    process began) lets the client report how long its start-up took.
    """
    importlib.import_module("fedmnist.model.keras_model")  # TensorFlow now, while the server starts, not in round 1.

    startup = None if process_started is None else time.perf_counter() - process_started
    log.info(
        "client %d/%d ready; the server's first message says the data, partition scheme and model",
        partition_id,
        num_partitions,
    )
    return PartitionClient(
        partition_id,
        num_partitions,
        None,
        ClientCache(data_home),
        fault=fault,
        startup_seconds=startup,
        clips_updates=True,
    )


class GuardedClient(Client):
    """``PartitionClient`` as a Flower ``Client`` that refuses a run whose settings differ from its own.

    The refusal goes back to the server as a result with a failed status and the
    reason, so the server's round record and console name it; the client then
    leaves (``SettingsMismatch``, a one-line error) at the server's next message.
    Flower's grpc-bidi client cannot leave between messages, only inside one.
    """

    def __init__(self, client: PartitionClient) -> None:
        self.client = client
        self.inner = client.to_client()
        self.refused = ""

    def get_properties(self, ins: GetPropertiesIns) -> GetPropertiesRes:
        return self.inner.get_properties(ins)

    def get_parameters(self, ins: GetParametersIns) -> GetParametersRes:
        # A stock Flower server asks one client for the initial weights, with an empty config.
        if self._refuse(ins.config):
            return GetParametersRes(Status(Code.GET_PARAMETERS_NOT_IMPLEMENTED, self.refused), Parameters([], ""))
        return self.inner.get_parameters(ins)

    def fit(self, ins: FitIns) -> FitRes:
        if self._refuse(ins.config):
            return FitRes(Status(Code.FIT_NOT_IMPLEMENTED, self.refused), Parameters([], ""), 0, {})
        return self.inner.fit(ins)

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        if self._refuse(ins.config):
            return EvaluateRes(Status(Code.EVALUATE_NOT_IMPLEMENTED, self.refused), 0.0, 0, {})
        return self.inner.evaluate(ins)

    def _refuse(self, config: dict[str, Scalar]) -> bool:
        self._leave_if_refused()
        problem = self.client.settings_problem(config)
        if problem:
            self.refused = f"refused: {problem}"
            log.error("this client %s", self.refused)
        return bool(problem)

    def _leave_if_refused(self) -> None:
        if self.refused:
            raise SettingsMismatch(f"this client {self.refused}")


def run_client(
    client: PartitionClient, server_address: str, connect_timeout: float, root_certificate: bytes | None = None
) -> None:
    """Serve ``client`` to the Flower server until it ends the run.

    Flower's grpc-bidi client gives up at the first refused connection, so this
    retries: an unreachable server (not started yet, restarting, or a sweep's
    next setting) is tried again until ``connect_timeout`` seconds have passed
    since the server was last heard from; then a UserError, not a traceback.
    With ``root_certificate`` (a CA's PEM bytes) the connection uses TLS.
    """
    from flwr.client import start_client

    guarded = GuardedClient(client)
    waiting_since = time.monotonic()
    while True:
        try:
            start_client(server_address=server_address, client=guarded, root_certificates=root_certificate)
            return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
        waiting_since = max(waiting_since, client.last_contact)
        if time.monotonic() - waiting_since > connect_timeout:
            hint = "is server.py running, and is the address right?"
            tls = speaks_tls(server_address)
            if root_certificate is None and tls:
                hint = "the server requires TLS: pass --root-cert with the CA certificate (ca.pem) it uses"
            elif root_certificate is not None and tls is False:
                hint = "the server does not use TLS: leave out --root-cert, or start the server with --tls-dir"
            elif root_certificate is not None:
                hint += " With TLS: was the server's certificate signed by this --root-cert, for this host name?"
            raise UserError(
                f"lost or could not reach the Flower server at {server_address} within {connect_timeout:g} s ({hint})"
            )
        time.sleep(RETRY_SECONDS)
