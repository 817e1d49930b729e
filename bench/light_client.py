"""A lightweight Flower client for load tests: the app's protocol, NumPy instead of TensorFlow.

It holds arrays of the MLP's shapes and answers ``fit`` with the global weights
plus a little noise, so a load test measures the server and the network, not
training. Usage: python bench/light_client.py HOST:PORT SEED [COUNT]

COUNT clients (seeds SEED, SEED+1, ...) share one process as threads: the
server sees COUNT connections all the same, without COUNT Python start-ups.
"""

import sys
import threading

import numpy as np
from flwr.client import Client, NumPyClient, start_client

SHAPES = [(784, 128), (128,), (128, 10), (10,)]  # fedmnist's default model.


class LightClient(NumPyClient):
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def get_parameters(self, config):
        return [np.zeros(shape, np.float32) for shape in SHAPES]

    def fit(self, parameters, config):
        updated = [w + self.rng.normal(0, 1e-3, w.shape).astype(np.float32) for w in parameters]
        return updated, 100, {"accuracy": 0.5, "loss": 1.0, "fit_seconds": 0.0}

    def evaluate(self, parameters, config):
        return 1.0, 100, {"accuracy": 0.5, "loss": 1.0, "evaluate_seconds": 0.0}


def serve_in_threads(address: str, clients: list[Client]) -> None:
    """Connect each of ``clients`` to the server at ``address`` from a thread of this process; return when all end."""
    threads = [
        threading.Thread(target=start_client, kwargs={"server_address": address, "client": client})
        for client in clients
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    first, count = int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 1
    serve_in_threads(sys.argv[1], [LightClient(seed).to_client() for seed in range(first, first + count)])
