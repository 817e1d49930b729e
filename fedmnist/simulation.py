"""The Simulation Runtime: a run's clients as virtual Flower clients on Ray, on this machine.

``./run.sh --runtime simulation --clients 100 --fraction-fit 0.1`` runs the same
server (validation, records, checkpoints, results) as the classic runtime, but
Flower's Simulation Runtime starts no client processes: a few Ray workers
(``--sim-cpus-per-client`` sets how many fit on the machine) each play many
virtual clients in turn, one message at a time.

Flower calls ``client_fn`` for every message, so building a Keras model and
tracing its training loop there would cost more than the training (measured
here: 138 ms to build and 476 ms for the first fit, against 2 ms and 11 ms
reused). ``WorkerCache`` keeps what is expensive per worker process: the data
(loaded once) and one compiled ``Trainer`` per model; each message only sets the
weights, resets the optimizer and cuts (then keeps) its client's rows. The cache
lives in this importable module because Ray pickles functions defined in
``__main__`` by value, so a cache there would start empty for every message.

Differences from the classic runtime, by design: the run's settings reach the
clients in the fit config (the server is their only source), and Adam starts
afresh every round, as in Flower's own simulation examples, because a virtual
client keeps no state between messages.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from flwr.client import Client, NumPyClient
from flwr.common import Context, NDArrays, Scalar
from flwr.server import Server, ServerConfig

from fedmnist.data import ClientData, MnistData, client_data, load_mnist

if TYPE_CHECKING:
    from fedmnist.model import Trainer

DATA_HOME_VARIABLE = "FEDMNIST_DATA_HOME"  # The driver's --data-home, for the Ray workers.


class WorkerCache:
    """What one Ray worker keeps between messages: the data, cut shares and one Trainer per model."""

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


_CACHE = WorkerCache()  # One per Ray worker process (see the module docstring).


class VirtualClient(NumPyClient):
    """One virtual client for one message: ``MnistClient``'s training on rows and a Trainer from the cache."""

    def __init__(self, partition_id: int, num_partitions: int) -> None:
        self.partition_id = partition_id
        self.num_partitions = num_partitions

    def _client(self, config: dict[str, Scalar]):
        from fedmnist.client_app import MnistClient

        seed = int(config["seed"])
        trainer = _CACHE.trainer(str(config["model"]), seed + self.partition_id)
        data = _CACHE.share(config, self.partition_id, self.num_partitions)
        return MnistClient(trainer, data, partition=str(config["partition"]), partition_id=self.partition_id)

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        return self._client(config).fit(parameters, config)

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        return self._client(config).evaluate(parameters, config)


def client_fn(context: Context) -> Client:
    """Flower's entry point for each message: the virtual client of the node's partition."""
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    return VirtualClient(partition_id, num_partitions).to_client()


def simulate(
    server: Server, server_config: ServerConfig, *, num_clients: int, cpus_per_client: float,
    ray_address: str | None = None, data_home: str | None = None,
) -> None:
    """Run ``server`` for its rounds with ``num_clients`` virtual clients on Ray; Ray is shut down after.

    The ServerApp runs in a thread of this process (so ``server`` records and
    checkpoints as in the classic runtime); the ClientApp runs in Ray workers.
    """
    import logging
    import warnings

    import ray
    from flwr.client import ClientApp
    from flwr.server import ServerApp, ServerAppComponents
    from flwr.simulation import run_simulation

    # Importing Flower's simulation turns every DeprecationWarning on ("once") for the whole
    # process, and TensorFlow's notes then reach the console; back to Python's default.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if data_home:
        os.environ[DATA_HOME_VARIABLE] = data_home  # Ray's workers inherit this process's environment.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Silences a tip about GPUs; there are none.
    components = ServerAppComponents(server=server, config=server_config)
    # Quiet: Ray's and the workers' own output would bury the round lines.
    init_args: dict[str, object] = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
    if ray_address:
        init_args["address"] = ray_address
    try:
        run_simulation(
            server_app=ServerApp(server_fn=lambda _context: components),
            client_app=ClientApp(client_fn=client_fn),
            num_supernodes=num_clients,
            backend_config={"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
                            "init_args": init_args},
        )
    finally:
        ray.shutdown()
