"""``client.py``'s client: a ``PartitionClient`` in its own process, connected to a classic Flower server.

``make_client`` builds it (TensorFlow loads while the server starts), ``GuardedClient`` refuses a
run whose settings differ from the client's own, and ``run_client`` serves it with Flower's
``start_client`` (grpc-bidi), retrying an unreachable server until ``--connect-timeout``, and one
it lost (an outage of minutes) until ``--reconnect-timeout``.
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
from fedmnist.common.garbage import start_up_done
from fedmnist.common.tls import speaks_tls
from fedmnist.settings import defaults

log = logging.getLogger(__name__)
RETRY_SECONDS = 0.5  # Pause between attempts to reach an unreachable server, at first.
BACKOFF_AFTER_SECONDS = 10.0  # An outage this long (not a restart) is retried less and less often...
MAX_RETRY_SECONDS = 10.0  # ...down to once this often.
# How Flower's grpc-bidi client ends when the server went away: refused or reset (UNAVAILABLE), or silent
# until the stream's deadline passed (DEADLINE_EXCEEDED: a pulled cable, a link that drops everything).
LOST_CONNECTION = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


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
    start_up_done()

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
        self.reconnecting = False  # Set by run_client when it lost the server: the next message says it is back.

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
        if self.reconnecting:
            self.reconnecting = False
            log.warning("back in touch with the Flower server: training again")
        problem = self.client.settings_problem(config)
        if problem:
            self.refused = f"refused: {problem}"
            log.error("this client %s", self.refused)
        return bool(problem)

    def _leave_if_refused(self) -> None:
        if self.refused:
            raise SettingsMismatch(f"this client {self.refused}")


def run_client(
    client: PartitionClient,
    server_address: str,
    connect_timeout: float,
    root_certificate: bytes | None = None,
    reconnect_timeout: float = defaults.RECONNECT_TIMEOUT,
) -> None:
    """Serve ``client`` to the Flower server until it ends the run.

    Flower's grpc-bidi client gives up at the first refused connection, and at a
    connection that went silent (a pulled cable: its stream's deadline passes), so
    this retries: a server not reached yet is tried until ``connect_timeout``
    seconds have passed; one lost after the client heard from it (restarting, a
    sweep's next setting, a network outage) until ``reconnect_timeout`` seconds
    after it was last heard from. Retries come every 0.5 s, then back off (up to
    every ``MAX_RETRY_SECONDS``) once an outage lasts ``BACKOFF_AFTER_SECONDS``;
    each change (lost, back) is one line. Then a UserError, not a traceback.
    With ``root_certificate`` (a CA's PEM bytes) the connection uses TLS.
    """
    from flwr.client import start_client

    guarded = GuardedClient(client)
    waiting_since, said_lost = time.monotonic(), 0.0
    while True:
        try:
            start_client(server_address=server_address, client=guarded, root_certificates=root_certificate)
            return
        except grpc.RpcError as error:
            if error.code() not in LOST_CONNECTION:
                raise
            why = error.code().name.lower().replace("_", " ")
        heard = client.last_contact
        waiting_since = max(waiting_since, heard)
        limit = reconnect_timeout if heard else connect_timeout
        if heard and heard != said_lost:  # Once per outage, not once per retry.
            said_lost, guarded.reconnecting = heard, True
            log.warning("lost the Flower server at %s (%s); retrying for up to %g s", server_address, why, limit)
        outage = time.monotonic() - waiting_since
        if outage > limit:
            raise UserError(
                f"lost or could not reach the Flower server at {server_address} within {limit:g} s "
                f"({_connection_hint(server_address, root_certificate)})"
            )
        time.sleep(retry_pause(outage))


def retry_pause(outage: float) -> float:
    """Seconds to wait before the next attempt, ``outage`` seconds into an outage: soon at first, then backing off."""
    if outage < BACKOFF_AFTER_SECONDS:
        return RETRY_SECONDS
    return min(MAX_RETRY_SECONDS, RETRY_SECONDS * 2 ** ((outage - BACKOFF_AFTER_SECONDS) / BACKOFF_AFTER_SECONDS + 1))


def _connection_hint(server_address: str, root_certificate: bytes | None) -> str:
    """What to check when the server could not be reached: TLS on one side only, or the address."""
    tls = speaks_tls(server_address)
    if root_certificate is None and tls:
        return "the server requires TLS: pass --root-cert with the CA certificate (ca.pem) it uses"
    if root_certificate is not None and tls is False:
        return "the server does not use TLS: leave out --root-cert, or start the server with --tls-dir"
    hint = "is server.py running, and is the address right?"
    if root_certificate is not None:
        hint += " With TLS: was the server's certificate signed by this --root-cert, for this host name?"
    return hint
