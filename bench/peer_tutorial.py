"""The peer we measure against: Flower's classic Keras tutorial, kept minimal.

``start_server`` with FedAvg and weighted-average accuracy, and clients that
call ``model.fit`` / ``model.evaluate`` on a compiled 784-128-10 MLP, as the
Flower and Keras tutorials do. It trains on exactly the rows fedmnist's
clients use (same 5k data, same partitions), so the two runs differ only in
how they train and coordinate.

    python bench/peer_tutorial.py server PORT ROUNDS CLIENTS
    python bench/peer_tutorial.py client PORT PARTITION CLIENTS
"""

import sys

import flwr as fl


def weighted_average(metrics):
    examples = [num_examples * m["accuracy"] for num_examples, m in metrics]
    return {"accuracy": sum(examples) / sum(num_examples for num_examples, _ in metrics)}


def server(port: str, rounds: str, clients: str) -> None:
    strategy = fl.server.strategy.FedAvg(
        min_fit_clients=int(clients),
        min_evaluate_clients=int(clients),
        min_available_clients=int(clients),
        evaluate_metrics_aggregation_fn=weighted_average,
    )
    fl.server.start_server(
        server_address=f"127.0.0.1:{port}", config=fl.server.ServerConfig(num_rounds=int(rounds)), strategy=strategy
    )


def client(port: str, partition: str, clients: str) -> None:
    import keras

    from fedmnist.data.sources import client_data, load_mnist, to_float

    share = client_data(load_mnist("mnist-5k"), int(partition), int(clients))
    x_train, y_train = to_float(share.x_train), share.y_train
    x_val, y_val = to_float(share.x_val), share.y_val
    model = keras.Sequential(
        [
            keras.Input(shape=(784,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

    class TutorialClient(fl.client.NumPyClient):
        def get_parameters(self, config):
            return model.get_weights()

        def fit(self, parameters, config):
            model.set_weights(parameters)
            model.fit(x_train, y_train, epochs=1, batch_size=32, verbose=0)
            return model.get_weights(), len(x_train), {}

        def evaluate(self, parameters, config):
            model.set_weights(parameters)
            loss, accuracy = model.evaluate(x_val, y_val, verbose=0)
            return loss, len(x_val), {"accuracy": accuracy}

    fl.client.start_client(server_address=f"127.0.0.1:{port}", client=TutorialClient().to_client())


if __name__ == "__main__":
    {"server": server, "client": client}[sys.argv[1]](*sys.argv[2:])
