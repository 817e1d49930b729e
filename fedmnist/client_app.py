"""The ClientApp: Flower's entry point for a client on the Simulation and the Deployment Runtime.

``app`` is what ``pyproject.toml`` names as the ``clientapp``. Flower calls
``client_fn`` for every message with the node's ``partition-id`` and
``num-partitions`` (from the simulation, or from a SuperNode's
``--node-config``); the run's other settings (dataset, seed, partition scheme,
model, local training) come from the server in each message's config, so the
server is their only source. The training itself is ``MnistClient``'s, the same
as ``client.py`` runs on the classic pair.

Building a Keras model and tracing its training loop costs more than a
message's training (measured here: 138 ms to build and 476 ms for the first
fit, against 2 ms and 11 ms reused). ``WorkerCache`` keeps what is expensive
per process: the data (loaded once) and one compiled ``Trainer`` per model;
each message only sets the weights, resets the optimizer and cuts (then keeps)
its client's rows. In a simulation one Ray worker plays many clients in turn
and the cache pays off; the Deployment Runtime starts a new ``flwr-clientapp``
process for every message, which the cache cannot help (README, Runtimes). The
cache lives in this importable module because Ray pickles functions defined in
``__main__`` by value, so a cache there would start empty for every message.

Each client's own state between messages is in Flower's ``context.state``:
Adam's step count and moments, so its training goes on across rounds as a
``client.py`` process's does (Flower's own examples start Adam afresh every round).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from flwr.client import Client, ClientApp, NumPyClient
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.common import Context, NDArrays, Scalar

from fedmnist.data import ClientData, MnistData, client_data, load_mnist

if TYPE_CHECKING:
    from fedmnist.model import Trainer

DATA_HOME_VARIABLE = "FEDMNIST_DATA_HOME"  # The driver's --data-home, for the Ray workers.
OPTIMIZER_STATE = "optimizer"  # context.state: Adam's variables after the client's latest fit.
STATE_OWNER = "optimizer-run"  # context.state: the run-id those variables belong to.


class WorkerCache:
    """What one process keeps between messages: the data, cut shares and one Trainer per model."""

    def __init__(self) -> None:
        self._data: dict[str, MnistData] = {}
        self._shares: dict[tuple[str, int, int, int, str], ClientData] = {}
        self._trainers: dict[str, Trainer] = {}

    def share(self, config: dict[str, Scalar], partition_id: int, num_partitions: int) -> ClientData:
        """Client ``partition_id``'s rows under the run's settings (from the fit config)."""
        dataset, seed, scheme = str(config["dataset"]), int(config["seed"]), str(config["partition"])
        key = (dataset, seed, partition_id, num_partitions, scheme)
        if key not in self._shares:
            if dataset not in self._data:
                self._data[dataset] = load_mnist(dataset, os.environ.get(DATA_HOME_VARIABLE) or None)
            self._shares[key] = client_data(self._data[dataset], partition_id, num_partitions, seed, partition=scheme)
        return self._shares[key]

    def trainer(self, model: str, seed: int) -> Trainer:
        """This worker's compiled Trainer for ``model``, with a fresh optimizer and shuffling from ``seed``."""
        from fedmnist.model import Trainer, build_model

        if model not in self._trainers:
            self._trainers[model] = Trainer(build_model(seed, model), seed=seed)
        trainer = self._trainers[model]
        trainer.reset(seed)
        return trainer


_CACHE = WorkerCache()  # One per process: a Ray worker, or one flwr-clientapp message (see the module docstring).


class VirtualClient(NumPyClient):
    """One client for one message: ``MnistClient``'s training on rows and a Trainer from the cache.

    What the client keeps between messages lives in Flower's ``context.state``
    (kept by the simulation, or by the SuperNode between ``flwr-clientapp``
    processes): Adam's step count and moments, so that training goes on across
    rounds as a ``client.py`` process's does, for the run (``run-id``) that made them.
    """

    def __init__(self, partition_id: int, num_partitions: int, state: RecordDict) -> None:
        self.partition_id = partition_id
        self.num_partitions = num_partitions
        self.state = state

    def _client(self, config: dict[str, Scalar]):
        from fedmnist.keras_client import MnistClient

        seed = int(config["seed"])
        trainer = _CACHE.trainer(str(config["model"]), seed + self.partition_id)
        data = _CACHE.share(config, self.partition_id, self.num_partitions)
        return MnistClient(trainer, data, partition=str(config["partition"]), partition_id=self.partition_id)

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        client = self._client(config)
        run_id = str(config.get("run-id", ""))
        kept, owner = self.state.get(OPTIMIZER_STATE), self.state.get(STATE_OWNER)
        if isinstance(kept, ArrayRecord) and isinstance(owner, ConfigRecord) and owner.get("run-id") == run_id:
            client.trainer.set_optimizer_state(kept.to_numpy_ndarrays())
        result = client.fit(parameters, config)
        self.state[OPTIMIZER_STATE] = ArrayRecord(client.trainer.optimizer_state())
        self.state[STATE_OWNER] = ConfigRecord({"run-id": run_id})
        return result

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        return self._client(config).evaluate(parameters, config)


def client_fn(context: Context) -> Client:
    """Flower's entry point for each message: the virtual client of the node's partition."""
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    return VirtualClient(partition_id, num_partitions, context.state).to_client()


app = ClientApp(client_fn=client_fn)
