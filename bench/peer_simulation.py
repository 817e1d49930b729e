"""A stock Flower simulation, written the way Flower's quickstart-tensorflow writes it: the peer of
``--runtime simulation`` in ``bench/simulation.py``.

Every fit and evaluate message builds and compiles a Keras model and calls ``model.fit`` /
``model.evaluate``; FedAvg samples the same fractions; the server evaluates on the same held-out
rows. Same data, same rows per client, same model and local training as the app, and the same
cohorts: Flower's own sampling draws other clients than the app's seeded one, and one seed's
cohorts can cost or win 3 points, which would bury the comparison of the two accuracies. So FedAvg
here draws as the app does (``fedmnist.server.client_manager.WaitingClientManager``: by partition id,
from the seed, the round and the stage), each client saying its partition id once, without a model.

    .venv/bin/python bench/peer_simulation.py CLIENTS ROUNDS FRACTION OUT_JSON
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras
from flwr.client import ClientApp, NumPyClient
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.strategy import FedAvg
from flwr.simulation import run_simulation

from fedmnist.data.sources import MNIST_5K, client_data, load_mnist, to_float
from fedmnist.model.keras_model import build_model
from fedmnist.server.client_manager import WaitingClientManager
from fedmnist.settings import defaults

MNIST = load_mnist(MNIST_5K)
# The run's seed (partitions, initial model), as the app's --seed; bench/simulation.py sets it per repeat.
# From the environment, which Ray's workers inherit: they import this module, not run main().
SEED = int(os.environ.get("PEER_SEED", defaults.SEED))


def compiled_model() -> keras.Model:
    model = build_model(SEED)
    model.compile(
        optimizer=keras.optimizers.Adam(defaults.LEARNING_RATE),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class KerasClient(NumPyClient):
    def __init__(self, partition_id: int, num_partitions: int) -> None:
        self.partition_id = partition_id
        self._model: keras.Model | None = None
        share = client_data(MNIST, partition_id, num_partitions, SEED)
        self.x_train, self.y_train = to_float(share.x_train), share.y_train
        self.x_val, self.y_val = to_float(share.x_val), share.y_val

    @property
    def model(self) -> keras.Model:
        # Built on first use (Ray pickles this class by value: functools.cached_property holds a lock).
        if self._model is None:
            self._model = compiled_model()
        return self._model

    def get_properties(self, config):
        return {"partition_id": self.partition_id}  # For the app's sampling; no model built.

    def fit(self, parameters, _config):
        self.model.set_weights(parameters)
        self.model.fit(
            self.x_train, self.y_train, epochs=defaults.LOCAL_EPOCHS, batch_size=defaults.BATCH_SIZE, verbose=0
        )
        return self.model.get_weights(), len(self.y_train), {}

    def evaluate(self, parameters, _config):
        self.model.set_weights(parameters)
        loss, accuracy = self.model.evaluate(self.x_val, self.y_val, verbose=0)
        return loss, len(self.y_val), {"accuracy": accuracy}


class SameCohorts(FedAvg):
    """FedAvg sampling each round's fit and evaluate clients as the app does (its seeded client manager)."""

    def configure_fit(self, server_round: int, parameters, client_manager: ClientManager):
        assert isinstance(client_manager, WaitingClientManager)
        client_manager.sampling_for(server_round, "fit")
        return super().configure_fit(server_round, parameters, client_manager)

    def configure_evaluate(self, server_round: int, parameters, client_manager: ClientManager):
        assert isinstance(client_manager, WaitingClientManager)
        client_manager.sampling_for(server_round, "evaluate")
        return super().configure_evaluate(server_round, parameters, client_manager)


def client_fn(context: Context):
    return KerasClient(int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])).to_client()


def main(clients: int, rounds: int, fraction: float, out: Path) -> None:
    held_out = compiled_model()
    accuracy: dict[int, float] = {}

    def evaluate(server_round, weights, _config):
        held_out.set_weights(weights)
        loss, accuracy[server_round] = held_out.evaluate(to_float(MNIST.x_test), MNIST.y_test, verbose=0)
        return loss, {"accuracy": accuracy[server_round]}

    sampled = max(1, round(fraction * clients))
    strategy = SameCohorts(
        fraction_fit=fraction,
        fraction_evaluate=fraction,
        min_fit_clients=sampled,
        min_evaluate_clients=sampled,
        min_available_clients=clients,
        evaluate_fn=evaluate,
        initial_parameters=ndarrays_to_parameters(held_out.get_weights()),
    )
    components = ServerAppComponents(
        strategy=strategy,
        config=ServerConfig(num_rounds=rounds),
        client_manager=WaitingClientManager(timeout=600, expected=clients, seed=SEED),
    )
    began = time.perf_counter()
    run_simulation(
        server_app=ServerApp(server_fn=lambda _context: components),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=clients,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    out.write_text(json.dumps({"simulation_seconds": time.perf_counter() - began, "accuracy": accuracy[rounds]}))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4]))
