"""The Flower client: a Keras ``NumPyClient`` training on one MNIST partition.

``MnistClient`` knows nothing about how it is launched; ``run_client`` connects
it to a classic Flower server with ``flwr.client.start_client`` (grpc-bidi).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc
import numpy as np
from flwr.client import Client, NumPyClient
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
    NDArrays,
    Parameters,
    Scalar,
    Status,
)

from fedmnist import config as defaults  # Flower's methods take a parameter named `config`.
from fedmnist.data import ClientData, client_data, load_mnist, to_float
from fedmnist.errors import UserError
from fedmnist.faults import corrupt, crash_if_due
from fedmnist.model import Trainer, build_model
from fedmnist.tls import speaks_tls

log = logging.getLogger(__name__)
RETRY_SECONDS = 0.5  # Pause between attempts to reach an unreachable server.


class MnistClient(NumPyClient):
    """Trains the shared model on its own rows and evaluates it on its validation slice.

    Fit config keys (all optional, so a stock FedAvg server that sends no config
    works): ``local-epochs``, ``batch-size``, ``learning-rate``, and
    ``proximal_mu`` from Flower's FedProx. Both ``fit`` and
    ``evaluate`` report ``accuracy`` and ``loss`` with the number of examples
    used, which the server's weighted average needs, plus their duration in
    seconds (and ``extra_metrics``, e.g. start-up timings) for the run's timing report.

    One client process can serve several runs in a row (``./run.sh sweep``):
    when the fit config's ``run-id`` changes, ``prepare(partition)`` gives it a
    fresh model and optimizer and its rows under that run's ``partition``.
    """

    def __init__(
        self,
        trainer: Trainer,
        data: ClientData,
        *,
        extra_metrics: dict[str, Scalar] | None = None,
        partition: str = defaults.PARTITION,
        prepare: Callable[[str], tuple[Trainer, ClientData]] | None = None,
        fault: str | None = None,
        settings: dict[str, Scalar] | None = None,
        partition_id: int | None = None,
    ) -> None:
        self._use(trainer, data)
        # What this client was started with, under the run config's keys (fedmnist.strategy.fit_config).
        self.settings = dict(settings or {})
        # Sent with every result, so the server's per-client records say which share this is.
        self.identity: dict[str, Scalar] = {} if partition_id is None else {"partition_id": partition_id}
        self.extra_metrics = dict(extra_metrics or {})
        self.partition = partition
        self._prepare = prepare
        self._run_id: str | None = None
        self.fault = fault  # client.py --fault: misbehave on purpose (fedmnist.faults).
        self.last_contact = 0.0  # time.monotonic() of the server's latest message.

    def _use(self, trainer: Trainer, data: ClientData) -> None:
        self.trainer = trainer
        self.x_train, self.y_train = to_float(data.x_train), data.y_train.astype(np.int32)
        self.x_val, self.y_val = to_float(data.x_val), data.y_val.astype(np.int32)

    def _follow_run(self, config: dict[str, Scalar]) -> None:
        """Start afresh when the server starts another run (a sweep's next setting)."""
        run_id = config.get("run-id")
        if run_id is None or run_id == self._run_id or self._prepare is None:
            return
        first, self._run_id = self._run_id is None, str(run_id)
        partition = str(config.get("partition", self.partition))
        if not first or partition != self.partition:
            self._use(*self._prepare(partition))
            self.partition = partition

    def settings_problem(self, config: dict[str, Scalar]) -> str:
        """Why this client must not train in the server's run, or "" when it may.

        A client cut with other partition settings than the server's would train
        on rows that overlap the other clients'. A sweep's later runs change the
        partition on purpose (the client re-cuts its rows), so only the first run
        compares it.
        """
        later_run = self._run_id is not None and config.get("run-id") != self._run_id
        mine = {**self.settings, "partition": self.partition}  # The partition a sweep last had it re-cut to.
        different = [
            f"{key} {value} here, {config[key]} on the server"
            for key, value in mine.items()
            if key in config and str(config[key]) != str(value) and not (later_run and key == "partition")
        ]
        return "; ".join(different)

    def get_parameters(self, config: dict[str, Scalar]) -> NDArrays:
        self.last_contact = time.monotonic()
        return self.trainer.get_weights()

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        started = time.perf_counter()
        self.last_contact = time.monotonic()
        self._follow_run(config)
        crash_if_due(self.fault, int(config.get("server-round", 0)))
        self.trainer.set_weights(parameters)
        result = self.trainer.fit(
            self.x_train,
            self.y_train,
            epochs=int(config.get("local-epochs", defaults.LOCAL_EPOCHS)),
            batch_size=int(config.get("batch-size", defaults.BATCH_SIZE)),
            learning_rate=float(config.get("learning-rate", defaults.LEARNING_RATE)),
            proximal_mu=float(config.get("proximal_mu", 0.0)),  # Flower's FedProx sends this key.
        )
        metrics = {"accuracy": result.accuracy, "loss": result.loss, **self.extra_metrics, **self.identity}
        metrics["fit_seconds"] = time.perf_counter() - started
        log.info(
            "round %s: trained on %d examples, local accuracy %.1f%%, loss %.3f, %.2f s",
            config.get("server-round", "?"), len(self.y_train), 100 * result.accuracy, result.loss,
            metrics["fit_seconds"],
        )
        return corrupt(self.fault, self.trainer.get_weights(), parameters), len(self.y_train), metrics

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        started = time.perf_counter()
        self.last_contact = time.monotonic()
        self.trainer.set_weights(parameters)
        result = self.trainer.evaluate(self.x_val, self.y_val)
        metrics = {"accuracy": result.accuracy, "loss": result.loss, **self.identity}
        metrics["evaluate_seconds"] = time.perf_counter() - started
        return result.loss, len(self.y_val), metrics


def make_client(
    *,
    partition_id: int,
    num_partitions: int,
    dataset: str = defaults.DATASET,
    seed: int = defaults.SEED,
    partition: str = defaults.PARTITION,
    model: str = defaults.MODEL,
    data_home: str | None = None,
    process_started: float | None = None,
    fault: str | None = None,
) -> MnistClient:
    """Load this client's partition and build its model.

    ``process_started`` (a ``time.perf_counter()`` reading taken when the
    process began) lets the client report how long start-up took.
    """
    data_started = time.perf_counter()
    mnist = load_mnist(dataset, data_home)  # Kept: a sweep re-cuts it for each setting.
    data = client_data(mnist, partition_id, num_partitions, seed, partition=partition)
    data_seconds = time.perf_counter() - data_started

    def new_trainer() -> Trainer:
        return Trainer(build_model(seed, model), seed=seed + partition_id)

    def prepare(scheme: str) -> tuple[Trainer, ClientData]:
        return new_trainer(), client_data(mnist, partition_id, num_partitions, seed, partition=scheme)

    trainer = new_trainer()
    settings: dict[str, Scalar] = {
        "num-partitions": num_partitions, "partition": partition, "seed": seed, "model": model, "dataset": mnist.source,
    }
    extra: dict[str, Scalar] = {"data_seconds": data_seconds}
    if process_started is not None:
        extra["startup_seconds"] = time.perf_counter() - process_started
    log.info(
        "client %d/%d ready: %d training and %d validation images, loaded in %.2f s",
        partition_id, num_partitions, len(data.y_train), len(data.y_val), data_seconds,
    )
    return MnistClient(
        trainer, data, extra_metrics=extra, partition=partition, prepare=prepare, fault=fault, settings=settings,
        partition_id=partition_id,
    )


class SettingsMismatch(UserError):
    """The server runs with other partition, seed, model or data settings than this client."""


class GuardedClient(Client):
    """``MnistClient`` as a Flower ``Client`` that refuses a run whose settings differ from its own.

    The refusal goes back to the server as a result with a failed status and the
    reason, so the server's round record and console name it; the client then
    leaves (``SettingsMismatch``, a one-line error) at the server's next message.
    Flower's grpc-bidi client cannot leave between messages, only inside one.
    """

    def __init__(self, client: MnistClient) -> None:
        self.client = client
        self.inner = client.to_client()
        self.refused = ""

    def get_properties(self, ins: GetPropertiesIns) -> GetPropertiesRes:
        return self.inner.get_properties(ins)

    def get_parameters(self, ins: GetParametersIns) -> GetParametersRes:
        self._leave_if_refused()
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
            self.refused = f"refused: settings differ from the server's ({problem})"
            log.error("this client %s; restart it with the server's settings", self.refused)
        return bool(problem)

    def _leave_if_refused(self) -> None:
        if self.refused:
            raise SettingsMismatch(f"this client {self.refused}; restart it with the server's settings")


def run_client(
    client: MnistClient, server_address: str, connect_timeout: float, root_certificate: bytes | None = None
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
            if error.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
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
