"""The Flower client: a Keras ``NumPyClient`` training on one MNIST partition, set up by the server.

``MnistClient`` trains given rows with a given ``Trainer``. ``PartitionClient``
is the client of one partition on every runtime: it knows only its
``partition-id`` and ``num-partitions`` (like a SuperNode's node config); the
run's other settings (dataset, seed, partition scheme, model, local training)
come from the server with every message, and ``ClientCache`` keeps what they
make (data, cut shares, compiled trainers) for the process's later messages.
``fedmnist.client.classic`` connects a ``PartitionClient`` to a classic Flower server
(``client.py``); ``fedmnist.client.client_app`` serves it as the ClientApp.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.client import NumPyClient
from flwr.common import NDArrays, Scalar

from fedmnist.client.attacker import (
    Assignment,
    Collusion,
    assignment,
    data_attack,
    poisoned_rows,
    poisoned_update,
    slices,
    train_each,
)
from fedmnist.client.faults import corrupt, fail_if_crashed, fail_if_due
from fedmnist.client.placement import ray_node
from fedmnist.common.errors import UserError
from fedmnist.common.garbage import pause_collection, start_up_done
from fedmnist.data.sources import ClientData, MnistData, client_shares, load_mnist, share_data, to_float
from fedmnist.privacy.dp import clip_update
from fedmnist.settings import defaults
from fedmnist.settings.client_config import missing_keys

if TYPE_CHECKING:  # TensorFlow loads when a process builds its first model: importing this module stays light.
    from fedmnist.model.keras_model import EpochResult, Trainer

log = logging.getLogger(__name__)
OPTIMIZER_STATE = "optimizer"  # The client's state: Adam's variables after its latest fit.
STATE_OWNER = "optimizer-run"  # The client's state: the run-id those variables belong to.
WARM_UP = "warm-up"  # A get_properties config key: prepare this process for the run (ClientCache.warm_up).
# The settings that decide a client's rows and model: what ClientCache keeps apart.
RUN_SETTINGS = ("dataset", "seed", "partition", "model")


class MnistClient(NumPyClient):
    """Trains the shared model on its own rows and evaluates it on its validation slice.

    Fit config keys: ``local-epochs``, ``batch-size``, ``learning-rate``,
    ``server-round``, and ``proximal_mu`` when Flower's FedProx sends it
    (``PartitionClient`` has checked that the server sent the rest). Both ``fit`` and
    ``evaluate`` report ``accuracy`` and ``loss`` with the number of examples
    used, which the server's weighted average needs, plus their duration in
    seconds and ``partition_id``, so the server's per-client records say which share this is.
    """

    def __init__(self, trainer: Trainer, data: ClientData, *, partition_id: int | None = None) -> None:
        self.trainer = trainer
        self.x_train, self.y_train = to_float(data.x_train), data.y_train.astype(np.int32)
        self.x_val, self.y_val = to_float(data.x_val), data.y_val.astype(np.int32)
        self.identity: dict[str, Scalar] = {} if partition_id is None else {"partition_id": partition_id}

    def get_parameters(self, config: dict[str, Scalar]) -> NDArrays:
        return self.trainer.get_weights()

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        started = time.perf_counter()
        result = self.train(parameters, config)
        metrics = {"accuracy": result.accuracy, "loss": result.loss, **self.identity}
        metrics["fit_seconds"] = time.perf_counter() - started
        log.info(
            "round %s: trained on %d examples, local accuracy %.1f%%, loss %.3f, %.2f s",
            config["server-round"],
            len(self.y_train),
            100 * result.accuracy,
            result.loss,
            metrics["fit_seconds"],
        )
        return self.trainer.get_weights(), len(self.y_train), metrics

    def train(self, parameters: NDArrays, config: dict[str, Scalar]) -> EpochResult:
        """Train from ``parameters`` as ``config`` says, quietly; the trainer then holds the new weights."""
        self.trainer.set_weights(parameters)
        return self.trainer.fit(
            self.x_train,
            self.y_train,
            epochs=int(config["local-epochs"]),
            batch_size=int(config["batch-size"]),
            learning_rate=float(config["learning-rate"]),
            proximal_mu=float(config.get("proximal_mu", 0.0)),  # Flower's FedProx adds it; other strategies do not.
        )

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        started = time.perf_counter()
        self.trainer.set_weights(parameters)
        result = self.trainer.evaluate(self.x_val, self.y_val)
        metrics = {"accuracy": result.accuracy, "loss": result.loss, **self.identity}
        metrics["evaluate_seconds"] = time.perf_counter() - started
        return result.loss, len(self.y_val), metrics


class SettingsMismatch(UserError):
    """The server cuts the training rows into another number of partitions than this client was started with."""


class ClientCache:
    """What one process keeps between messages: the data, each share's ``MnistClient``, one Trainer per model.

    Building a Keras model and tracing its training loop costs more than a
    message's training (measured here: 138 ms to build and 476 ms for the first
    fit, against 2 ms and 11 ms reused), so each model is built once per
    process and its weights and optimizer are set per message.
    """

    def __init__(self, data_home: str | None = None) -> None:
        self.data_home = data_home
        self.data_seconds = 0.0  # Spent loading data in this process, reported to the server once.
        self.warm_up_seconds = 0.0  # Spent warming up for a run ahead of its first message (warm_up), reported too.
        self._data: dict[str, MnistData] = {}
        self._clients: dict[tuple[Scalar | None, ...], MnistClient] = {}
        self._shares: dict[tuple[Scalar, ...], list[np.ndarray]] = {}  # Every client's rows, per way of cutting.
        self._trainers: dict[str, Trainer] = {}
        self._warm: set[tuple[Scalar, ...]] = set()  # The runs' settings this process has warmed up for.
        self._optimizer_owners: dict[str, tuple[Scalar, ...]] = {}  # Whose Adam state each model's Trainer holds.
        self.collusion = Collusion()  # The honest updates this process's colluding attackers share.

    def client(
        self, settings: dict[str, Scalar], partition_id: int, num_partitions: int, poison: str | None = None
    ) -> MnistClient:
        """Client ``partition_id``'s rows under the run's ``settings`` (``RUN_SETTINGS``' keys), with its model's Trainer.

        ``poison``: a data-poisoning attack (``fedmnist.client.attacker.poisoned_rows``) the client trains under.
        """
        dataset, seed, scheme, model = (settings[key] for key in RUN_SETTINGS)
        key = (dataset, seed, scheme, model, partition_id, num_partitions, poison)
        if key not in self._clients:
            share = poisoned_rows(poison, self.rows(settings, partition_id, num_partitions), int(seed) + partition_id)
            self._clients[key] = MnistClient(self.trainer(str(model), int(seed)), share, partition_id=partition_id)
        return self._clients[key]

    def rows(self, settings: dict[str, Scalar], partition_id: int, num_partitions: int) -> ClientData:
        """Client ``partition_id``'s training rows and validation slice (uint8 pixels) under the run's ``settings``."""
        dataset, seed, scheme = (settings[key] for key in RUN_SETTINGS[:3])
        data, cut = self.data(str(dataset)), (dataset, seed, scheme, num_partitions)
        if cut not in self._shares:  # Once per process: Flower Datasets takes 6-10 s to cut 60,000 rows.
            self._shares[cut] = client_shares(data, num_partitions, int(seed), str(scheme))
        return share_data(data, self._shares[cut], partition_id, int(seed))

    def data(self, dataset: str) -> MnistData:
        """The data set ``dataset`` (a ``--dataset`` value or the source the server resolved), loaded once."""
        if dataset not in self._data:
            started = time.perf_counter()
            self._data[dataset] = load_mnist(dataset, self.data_home)
            self.data_seconds += time.perf_counter() - started
        return self._data[dataset]

    def warm_up(
        self, settings: dict[str, Scalar], partition_id: int, num_partitions: int, config: dict[str, Scalar]
    ) -> None:
        """Do now what this process's first fit and evaluate would: load the data, cut the shares, trace the model.

        A simulation worker's first message costs seconds (its TensorFlow
        import, then these: most of round 1 in all); a server that warms its
        workers up while it starts pays them beside its own start-up. The
        training is thrown away: every fit sets its weights, Adam's state and
        its shuffling afresh. Once per run's settings: later calls return at once.
        """
        run = (*(settings[key] for key in RUN_SETTINGS), num_partitions)
        if run in self._warm:
            return
        started = time.perf_counter()
        pause_collection()  # The first warm-up imports TensorFlow and builds the model (fedmnist.common.garbage).
        try:
            client = self.client(settings, partition_id, num_partitions)
            model = str(settings["model"])
            weights = client.trainer.get_weights()
            client.fit(weights, {**config, "local-epochs": 1})
            client.evaluate(weights, config)
            client.trainer.reset_optimizer()
        finally:
            start_up_done()
        self.hand_optimizer(model, ())  # Its Adam state is no client's.
        self._warm.add(run)
        self.warm_up_seconds += time.perf_counter() - started

    def hand_optimizer(self, model: str, owner: tuple[Scalar, ...]) -> bool:
        """Give ``model``'s Trainer's optimizer to ``owner`` (a client in a run); True if it already held its state."""
        held = self._optimizer_owners.get(model) == owner
        self._optimizer_owners[model] = owner
        return held

    def trainer(self, model: str, seed: int) -> Trainer:
        """This process's compiled Trainer for ``model`` (its weights and optimizer are set per message)."""
        from fedmnist.model.keras_model import Trainer, build_model

        if model not in self._trainers:
            self._trainers[model] = Trainer(build_model(seed, model), seed=seed)
        return self._trainers[model]


class PartitionClient(NumPyClient):
    """The client of partition ``partition_id`` of ``num_partitions``, set up by the server's messages.

    Each message's config says the run's settings (every key of
    ``fedmnist.settings.client_config.client_keys``: a config that lacks one is
    refused, not filled in with defaults); the rows and model come from ``cache``.
    Each fit starts Adam afresh, as FedAvg's clients do, unless the config
    says ``keep-optimizer``: then the client keeps Adam's step count and
    moments between messages, for the run (``run-id``) that made them, so
    training goes on across rounds and starts afresh in a sweep's next run.
    Under a ClientApp they live in ``state`` (Flower's ``context.state``: the
    process's Trainer serves many clients in turn); a ``client.py`` process
    (``state`` None) has one client, whose Trainer simply keeps them. A server
    whose ``num-partitions`` differs would have this client train on rows that
    overlap others': ``settings_problem`` says so.
    """

    def __init__(
        self,
        partition_id: int,
        num_partitions: int,
        state: RecordDict | None,
        cache: ClientCache,
        *,
        fault: str | None = None,
        startup_seconds: float | None = None,
        clips_updates: bool = False,
    ) -> None:
        self.partition_id = partition_id
        self.num_partitions = num_partitions
        self.state = state
        self.cache = cache
        self.fault = fault  # client.py --fault: misbehave on purpose (fedmnist.client.faults).
        self.startup_seconds = startup_seconds
        # Client-side DP: clip here when no mod does (client.py on the classic pair; a ClientApp has Flower's mod).
        self.clips_updates = clips_updates
        self.last_contact = 0.0  # time.monotonic() of the server's latest message.

    def settings_problem(self, config: dict[str, Scalar]) -> str:
        """Why this client must not train in the server's run, or "" when it may."""
        missing = missing_keys(config)
        if missing:
            return missing
        theirs = int(config["num-partitions"])
        if theirs != self.num_partitions:
            return (
                f"settings differ from the server's (num-partitions {self.num_partitions} here, {theirs} on the"
                " server); restart it with the server's settings"
            )
        return ""

    def _settings(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        self.last_contact = time.monotonic()
        problem = self.settings_problem(config)
        if problem:
            raise SettingsMismatch(f"this client refused the run: {problem}")
        return {key: config[key] for key in RUN_SETTINGS}

    def _client(self, config: dict[str, Scalar]) -> MnistClient:
        return self.cache.client(self._settings(config), self.partition_id, self.num_partitions)

    def get_properties(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        """Its partition id (the server samples by it); a server may also ask a process to warm up first."""
        if config.get(WARM_UP):
            self.cache.warm_up(self._settings(config), self.partition_id, self.num_partitions, config)
        return {"partition_id": self.partition_id}

    def get_parameters(self, config: dict[str, Scalar]) -> NDArrays:
        return self._client(config).get_parameters(config)

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        settings = self._settings(config)
        attack = assignment(self.fault, config, self.partition_id)
        client = self.cache.client(settings, self.partition_id, self.num_partitions, data_attack(attack))
        server_round = int(config["server-round"])
        fail_if_due(self.fault, server_round, own_process=self.state is None)
        run_id = str(config["run-id"])
        keep = bool(config["keep-optimizer"])
        if keep:
            self._take_optimizer(client.trainer, str(settings["model"]), run_id)
        else:
            client.trainer.reset_optimizer()
            self.cache.hand_optimizer(str(settings["model"]), ())  # The Trainer's Adam is no client's kept state now.
        client.trainer.reseed(_training_seed(int(settings["seed"]), self.partition_id, server_round))
        weights, num_examples, metrics = client.fit(parameters, config)
        if keep and self.state is not None:
            self.state[OPTIMIZER_STATE] = ArrayRecord(client.trainer.optimizer_state())
            self.state[STATE_OWNER] = ConfigRecord({"run-id": run_id})
        metrics["data_seconds"] = self.cache.data_seconds
        if self.cache.warm_up_seconds:
            metrics["warm_up_seconds"] = self.cache.warm_up_seconds
        if self.startup_seconds is not None:
            metrics["startup_seconds"] = self.startup_seconds
        node = ray_node()
        if node is not None:
            metrics[defaults.NODE_KEY] = node
        if self.clips_updates:
            weights = clip_update(weights, parameters, config)
        if attack is not None:
            weights = poisoned_update(
                attack, parameters, weights, lambda: self._colluders_honest(attack, settings, parameters, config)
            )
        return corrupt(self.fault, weights, parameters), num_examples, metrics

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        client = self._client(config)
        fail_if_crashed(self.fault, int(config["server-round"]), own_process=self.state is None)
        return client.evaluate(parameters, config)

    def _colluders_honest(
        self, attack: Assignment, settings: dict[str, Scalar], start: NDArrays, config: dict[str, Scalar]
    ) -> list[NDArrays]:
        """The honest weights the colluders share this round (a lone attacker's: from slices of its rows)."""
        seed, server_round = int(settings["seed"]), int(config["server-round"])
        trainer = self.cache.trainer(str(settings["model"]), seed)
        if len(attack.colluders) > 1:
            runs = [
                (self.cache.client(settings, p, self.num_partitions), _training_seed(seed, p, server_round))
                for p in attack.colluders
            ]
        else:
            rows = self.cache.rows(settings, self.partition_id, self.num_partitions)
            runs = [
                (MnistClient(trainer, part), (*_training_seed(seed, self.partition_id, server_round), index))
                for index, part in enumerate(slices(rows))
            ]
        key = (
            config["run-id"],
            server_round,
            attack.colluders,
            None if len(attack.colluders) > 1 else self.partition_id,
        )

        def train() -> list[NDArrays]:
            return train_each(trainer, runs, lambda client: (client.train(start, config), trainer.get_weights())[1])

        return self.cache.collusion.honest_updates(key, train)

    def _take_optimizer(self, trainer: Trainer, model: str, run_id: str) -> None:
        """Adam as this client left it in this run, else fresh.

        The Trainer may still hold exactly that (a ``client.py`` process, or
        the same virtual client twice in a row on a worker): then nothing is
        copied, which saves about 8 ms of every fit here.
        """
        if self.cache.hand_optimizer(model, (self.partition_id, self.num_partitions, run_id)):
            return
        trainer.reset_optimizer()
        kept, owner = (
            (self.state.get(OPTIMIZER_STATE), self.state.get(STATE_OWNER)) if self.state is not None else (None, None)
        )
        if isinstance(kept, ArrayRecord) and isinstance(owner, ConfigRecord) and owner.get("run-id") == run_id:
            trainer.set_optimizer_state(kept.to_numpy_ndarrays())


def _training_seed(seed: int, partition_id: int, server_round: int) -> Sequence[int]:
    """Every client, every round, its own seed: its order of examples and Keras's random draws."""
    return (seed, partition_id, server_round)
