"""The centralized reference: the same model trained on all the clients' rows in one place.

Federated training can at best match training on the union of the clients'
training rows with the same model, seed and number of epochs; the gap between
the two curves is the price of federation (and of non-IID data).
"""

from __future__ import annotations

import numpy as np

from fedmnist import config
from fedmnist.data import MnistData, client_data, client_shares, to_float


def union_of_client_rows(
    data: MnistData, num_clients: int, seed: int, partition: str = config.PARTITION
) -> tuple[np.ndarray, np.ndarray]:
    """Every client's training rows (not their validation slices), as float pixels and int labels."""
    rows = client_shares(data, num_clients, seed, partition)  # Cut once, not once per client.
    shares = [client_data(data, i, num_clients, seed, partition=partition, shares=rows) for i in range(num_clients)]
    x = np.concatenate([share.x_train for share in shares])
    y = np.concatenate([share.y_train for share in shares])
    return to_float(x), y.astype(np.int32)


def train_centrally(
    data: MnistData,
    *,
    num_clients: int,
    rounds: int,
    seed: int = config.SEED,
    partition: str = config.PARTITION,
    model: str = config.MODEL,
    local_epochs: int = config.LOCAL_EPOCHS,
    batch_size: int = config.BATCH_SIZE,
    learning_rate: float = config.LEARNING_RATE,
) -> dict[str, list[list[float]]]:
    """Train ``local_epochs`` epochs per "round" on the union; held-out metrics after each.

    Returns ``{"accuracy": [[round, value], ...], "loss": [...]}`` with round 0
    the untrained model, the same shape as the History's centralized series.
    """
    from fedmnist.model import Trainer, build_model

    x, y = union_of_client_rows(data, num_clients, seed, partition)
    x_test, y_test = to_float(data.x_test), data.y_test.astype(np.int32)
    trainer = Trainer(build_model(seed, model), seed=seed)
    curves: dict[str, list[list[float]]] = {"accuracy": [], "loss": []}
    for server_round in range(rounds + 1):
        if server_round:
            trainer.fit(x, y, epochs=local_epochs, batch_size=batch_size, learning_rate=learning_rate)
        result = trainer.evaluate(x_test, y_test)
        curves["accuracy"].append([server_round, result.accuracy])
        curves["loss"].append([server_round, result.loss])
    return curves
