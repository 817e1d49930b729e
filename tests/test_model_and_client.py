"""Real Keras training on a real MNIST slice, through the Trainer and the NumPyClient."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from flwr.common import Scalar

from fedmnist.client.classic import make_client
from fedmnist.client.flower_client import RUN_SETTINGS, MnistClient, SettingsMismatch
from fedmnist.data.sources import client_data, to_float
from fedmnist.model.keras_model import Trainer, build_model, proximal_term, save_model
from fedmnist.settings.client_config import config_for_clients
from fedmnist.settings.server_settings import ServerSettings


@pytest.fixture(scope="module")
def share(mnist_5k):
    return client_data(mnist_5k, 0, 3, seed=1)


def test_model_maps_pixels_to_class_probabilities() -> None:
    model = build_model(seed=0)
    probabilities = model(np.zeros((4, 784), np.float32)).numpy()
    assert probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert [w.shape for w in model.get_weights()] == [(784, 128), (128,), (128, 10), (10,)]


@pytest.mark.parametrize(
    ("name", "shapes"),
    [
        ("mlp", [(784, 128), (128,), (128, 10), (10,)]),
        ("dense32", [(784, 32), (32,), (32, 10), (10,)]),
        ("cnn", [(3, 3, 1, 8), (8,), (3, 3, 8, 16), (16,), (400, 10), (10,)]),
        ("2nn", [(784, 200), (200,), (200, 200), (200,), (200, 10), (10,)]),
        ("cnn-paper", [(5, 5, 1, 32), (32,), (5, 5, 32, 64), (64,), (3136, 512), (512,), (512, 10), (10,)]),
    ],
)
def test_each_model_takes_flat_pixels_and_gives_probabilities(name: str, shapes: list) -> None:
    model = build_model(seed=0, name=name)
    probabilities = model(np.zeros((2, 784), np.float32)).numpy()
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert [w.shape for w in model.get_weights()] == shapes


@pytest.mark.parametrize(("name", "parameters"), [("2nn", 199_210), ("cnn-paper", 1_663_370)])
def test_the_fedavg_papers_models_have_the_papers_sizes(name: str, parameters: int) -> None:
    """McMahan et al. 2017 give both sizes; a layer too many or a padding changed would show here."""
    assert build_model(seed=0, name=name).count_params() == parameters


def test_cnn_learns_on_real_images(mnist_5k, share) -> None:
    trainer = Trainer(build_model(seed=0, name="cnn"), seed=0)
    trainer.fit(to_float(share.x_train), share.y_train.astype(np.int32), epochs=2)
    assert trainer.evaluate(to_float(mnist_5k.x_test), mnist_5k.y_test.astype(np.int32)).accuracy > 0.7


def test_same_seed_gives_same_initial_weights() -> None:
    first, second = build_model(seed=3).get_weights(), build_model(seed=3).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_training_beats_chance_on_held_out_images(mnist_5k, share) -> None:
    trainer = Trainer(build_model(seed=0), seed=0)
    x_test, y_test = to_float(mnist_5k.x_test), mnist_5k.y_test.astype(np.int32)
    before = trainer.evaluate(x_test, y_test)
    trainer.fit(to_float(share.x_train), share.y_train.astype(np.int32), epochs=2)
    after = trainer.evaluate(x_test, y_test)
    assert before.accuracy < 0.3  # An untrained model is near chance (0.1).
    assert after.accuracy > 0.8 and after.loss < before.loss


def test_evaluate_matches_keras_evaluate(mnist_5k) -> None:
    model = build_model(seed=0)
    trainer = Trainer(model)
    x, y = to_float(mnist_5k.x_test[:200]), mnist_5k.y_test[:200].astype(np.int32)
    ours = trainer.evaluate(x, y)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, accuracy = model.evaluate(x, y, verbose=0, batch_size=200)
    assert ours.loss == pytest.approx(loss, rel=1e-4) and ours.accuracy == pytest.approx(accuracy)


def run_config(**changes: Any) -> dict[str, Scalar]:
    """Round 1's config from a server of 5 clients on the 5k rows, as server.py sends it."""
    return config_for_clients(ServerSettings(clients=5, **changes), "mnist-5k", run_id="a")(1)


def test_client_fit_trains_with_the_servers_local_settings(share) -> None:
    client = MnistClient(Trainer(build_model(seed=0)), share)
    start = client.get_parameters({})
    weights, num_examples, metrics = client.fit(start, run_config())
    assert num_examples == len(share.y_train) == 1201
    assert not np.allclose(weights[0], start[0])
    assert {"accuracy", "loss", "fit_seconds"} <= set(metrics)
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_client_fit_config_overrides_local_epochs(share) -> None:
    client = MnistClient(Trainer(build_model(seed=0)), share)
    start = client.get_parameters({})
    one = client.fit(start, run_config(local_epochs=1, learning_rate=0.001))[0]
    three = client.fit(start, run_config(local_epochs=3, batch_size=64))[0]
    # More epochs move the weights further from the starting point.
    assert np.linalg.norm(three[0] - start[0]) > np.linalg.norm(one[0] - start[0])


def test_client_evaluate_reports_loss_examples_and_accuracy(share) -> None:
    client = MnistClient(Trainer(build_model(seed=0)), share)
    loss, num_examples, metrics = client.evaluate(client.get_parameters({}), {})
    assert num_examples == len(share.y_val) == 133
    assert metrics["loss"] == loss and 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_a_client_takes_its_data_and_model_from_the_servers_config(data_home: str) -> None:
    client = make_client(partition_id=1, num_partitions=5, data_home=data_home, process_started=0.0)
    config = run_config(seed=7, partition="shards:2", model="dense32")
    start = client.get_parameters(config)
    assert [w.shape for w in start] == [(784, 32), (32,), (32, 10), (10,)]  # dense32, as the server said.
    _, num_examples, metrics = client.fit(start, config)
    assert num_examples == 720  # 4,000 rows in 5 shares, 10% of each kept for validation.
    assert float(metrics["startup_seconds"]) > 0 and float(metrics["data_seconds"]) >= 0
    assert metrics["partition_id"] == 1
    share = client.cache.client({key: config[key] for key in RUN_SETTINGS}, 1, 5)
    assert len(np.unique(np.concatenate([share.y_train, share.y_val]))) <= 4  # shards:2: a few digits only.


def test_a_client_started_for_other_partitions_refuses_the_run(data_home: str) -> None:
    client = make_client(partition_id=1, num_partitions=5, data_home=data_home)
    three = {**run_config(), "num-partitions": 3}
    assert client.settings_problem(three) == (
        "settings differ from the server's (num-partitions 5 here, 3 on the server); restart it with the server's settings"
    )
    assert client.settings_problem(run_config()) == ""
    with pytest.raises(SettingsMismatch, match="num-partitions 5 here, 3 on the server"):
        client.fit([], three)


def test_a_client_refuses_a_config_that_lacks_a_setting_instead_of_assuming_one(data_home: str) -> None:
    client = make_client(partition_id=1, num_partitions=5, data_home=data_home)
    lacking = {key: value for key, value in run_config().items() if key not in ("learning-rate", "seed")}
    with pytest.raises(
        SettingsMismatch, match=r"^this client refused the run: the server sent no seed, learning-rate \("
    ):
        client.fit([], lacking)
    with pytest.raises(SettingsMismatch, match="the server sent no server-round, run-id, num-partitions, dataset"):
        client.evaluate([], {})  # A stock FedAvg server, as in Flower's tutorials, sends no config.


def test_a_client_shuffles_differently_each_round(data_home: str) -> None:
    client = make_client(partition_id=0, num_partitions=5, data_home=data_home)
    config = run_config(model="dense32", local_epochs=1)
    start = client.get_parameters(config)
    first = client.fit(start, {**config, "server-round": 1})[0]
    again = client.fit(start, {**config, "server-round": 1, "run-id": "other"})[0]
    second = client.fit(start, {**config, "server-round": 2, "run-id": "another"})[0]
    np.testing.assert_allclose(first[0], again[0], atol=1e-6)  # Same seed, partition and round: same order.
    assert not np.allclose(first[0], second[0], atol=1e-4)  # Another round: another order.


def test_saved_model_is_complete_and_predicts(tmp_path: Path, mnist_5k) -> None:
    model = build_model(seed=0)
    path = tmp_path / "models" / "global_2.keras"
    save_model(model, str(path))
    loaded = keras.saving.load_model(path)
    x = to_float(mnist_5k.x_test[:5])
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_proximal_term_by_hand() -> None:
    # mu / 2 * ((1 - 0)^2 + (2 - 0)^2 + (3 - 1)^2) = 0.1 / 2 * 9 = 0.45
    weights = [np.array([1.0, 2.0], np.float32), np.array([3.0], np.float32)]
    anchor = [np.zeros(2, np.float32), np.ones(1, np.float32)]
    assert float(proximal_term(weights, anchor, 0.1)) == pytest.approx(0.45)


def test_fedprox_keeps_the_update_closer_to_the_global_model(share) -> None:
    def distance_moved(mu: float) -> float:
        client = MnistClient(Trainer(build_model(seed=0), seed=0), share)
        start = client.get_parameters({})
        weights = client.fit(start, {**run_config(local_epochs=3), "proximal_mu": mu})[0]
        return float(np.sqrt(sum(np.sum((w - s) ** 2) for w, s in zip(weights, start))))

    plain, proximal = distance_moved(0.0), distance_moved(1.0)
    assert proximal < 0.9 * plain


def test_training_runs_deterministic_kernels_and_a_random_layer_draws_from_each_clients_round(share) -> None:
    """Op determinism is on wherever the model is imported; a Dropout layer's draws follow reseed, not history."""
    from keras import layers
    from tensorflow.python.framework import config as tensorflow_config  # is_op_determinism_enabled is not exported.

    assert tensorflow_config.is_op_determinism_enabled()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input(shape=(784,)), layers.Dense(16), layers.Dropout(0.5), layers.Dense(10, activation="softmax")]
    )
    trainer = Trainer(model)
    x, y = to_float(share.x_train), share.y_train.astype(np.int32)
    start = trainer.get_weights()

    def fit(seed: tuple[int, ...]) -> list[np.ndarray]:
        trainer.set_weights(start)
        trainer.reset_optimizer()
        trainer.reseed(seed)
        trainer.fit(x, y, epochs=1, batch_size=32, learning_rate=0.01, proximal_mu=0.0)
        return trainer.get_weights()

    first, other, again = fit((7, 1, 2)), fit((7, 2, 2)), fit((7, 1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))  # The same client and round, whatever ran between.
    assert not np.array_equal(first[0], other[0])
