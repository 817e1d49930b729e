"""The centralized reference: the same model trained on all the clients' rows in one place.

Federated training can at best match training on the union of the clients'
training rows with the same model, seed and number of epochs; the gap between
the two curves is the price of federation (and of non-IID data).
"""

from __future__ import annotations

import argparse

import numpy as np

from fedmnist.data.sources import MnistData, client_shares, share_data, to_float
from fedmnist.settings import defaults
from fedmnist.settings.server_settings import ServerSettings


def union_of_client_rows(
    data: MnistData, num_clients: int, seed: int, partition: str = defaults.PARTITION
) -> tuple[np.ndarray, np.ndarray]:
    """Every client's training rows (not their validation slices), as float pixels and int labels."""
    rows = client_shares(data, num_clients, seed, partition)  # Cut once, not once per client.
    shares = [share_data(data, rows, i, seed) for i in range(num_clients)]
    x = np.concatenate([share.x_train for share in shares])
    y = np.concatenate([share.y_train for share in shares])
    return to_float(x), y.astype(np.int32)


def train_centrally(
    data: MnistData, settings: ServerSettings, rounds: int | None = None
) -> dict[str, list[list[float]]]:
    """Train as the run's clients would, ``local_epochs`` epochs per "round", on the union; held-out metrics after each.

    ``rounds`` defaults to the run's. Returns ``{"accuracy": [[round, value], ...],
    "loss": [...]}`` with round 0 the untrained model, the same shape as the
    History's centralized series.
    """
    from fedmnist.model.keras_model import Trainer, build_model

    x, y = union_of_client_rows(data, settings.clients, settings.seed, settings.partition)
    x_test, y_test = to_float(data.x_test), data.y_test.astype(np.int32)
    trainer = Trainer(build_model(settings.seed, settings.model), seed=settings.seed)
    curves: dict[str, list[list[float]]] = {"accuracy": [], "loss": []}
    for server_round in range((settings.rounds if rounds is None else rounds) + 1):
        if server_round:
            trainer.fit(
                x, y, epochs=settings.local_epochs, batch_size=settings.batch_size, learning_rate=settings.learning_rate
            )
        result = trainer.evaluate(x_test, y_test)
        curves["accuracy"].append([server_round, result.accuracy])
        curves["loss"].append([server_round, result.loss])
    return curves


def main(argv: list[str] | None = None) -> None:
    """Train the model centrally on the rows a run's clients would hold; held-out accuracy after each epoch."""
    from fedmnist.common.cli import run_cli
    from fedmnist.data.sources import load_mnist

    args = _central_parser().parse_args(argv)

    def train() -> None:
        data = load_mnist(args.dataset, args.data_home)
        print(
            f"{data.source}: the rows of {args.clients} clients, {args.model}, batch {args.batch_size}, "
            f"Adam {args.learning_rate}",
            flush=True,
        )
        pooled = ServerSettings(
            clients=args.clients,
            rounds=args.epochs,
            seed=args.seed,
            partition=args.partition,
            model=args.model,
            local_epochs=1,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
        )
        accuracy = train_centrally(data, pooled)["accuracy"]
        for epoch, value in accuracy[1:]:
            print(f"epoch {epoch:.0f}/{args.epochs}: held-out accuracy {100 * value:.1f}%")
        epoch, best = max(accuracy[1:], key=lambda point: point[1])
        print(f"best held-out accuracy {100 * best:.1f}% (epoch {epoch:.0f} of {args.epochs})")

    run_cli(train)


def _central_parser() -> argparse.ArgumentParser:
    """``./run.sh central``'s flags: the data, the clients whose rows are pooled, the model and training."""
    from fedmnist.common.cli import Parser
    from fedmnist.settings.arguments import dataset_spec, partition_spec, positive_float, positive_int

    parser = Parser(
        prog="./run.sh central",
        description="Train the model centrally on the rows a run's clients "
        "would hold; held-out accuracy after each epoch. The reference the experiments page's tables quote (docs/experiments.md).",
    )
    parser.add_argument(
        "--dataset",
        type=dataset_spec,
        default=defaults.DATASET,
        help="auto, openml, mnist-5k, fashion-mnist or idx:DIR (default: %(default)s)",
    )
    parser.add_argument("--data-home", default=None, help="scikit-learn data home (default: its own)")
    parser.add_argument(
        "--clients",
        type=positive_int,
        default=defaults.CLIENTS,
        help="whose rows (less their validation slices) are pooled (default: %(default)s)",
    )
    parser.add_argument(
        "--partition",
        type=partition_spec,
        default=defaults.PARTITION,
        help="how the rows are cut first; the union is the same rows (default: %(default)s)",
    )
    parser.add_argument("--model", choices=defaults.MODELS, default=defaults.MODEL, help="(default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=10, help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.BATCH_SIZE, help="(default: %(default)s)")
    parser.add_argument(
        "--learning-rate", type=positive_float, default=defaults.LEARNING_RATE, help="Adam's (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=defaults.SEED, help="(default: %(default)s)")
    return parser
