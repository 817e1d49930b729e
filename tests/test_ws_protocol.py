"""The /ws participant protocol's parts: message checks, places, size caps, /docs, and the NumPy client's maths."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import PROJECT_ROOT
from fedmnist.dashboard.app import create_app
from fedmnist.dashboard.participants import Federation
from fedmnist.dashboard.protocol import (
    BadMessage,
    EvaluateResultMessage,
    arrays,
    dense_layer_sizes,
    message_cap,
    parse_participant_message,
    rows,
)
from fedmnist.dashboard.schemas import Tensor
from fedmnist.data.sources import MnistData, to_float

DENSE32 = [(784, 32), (32,), (32, 10), (10,)]


def load_ws_client():
    spec = importlib.util.spec_from_file_location("ws_client", PROJECT_ROOT / "examples" / "ws_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tensor(values: list[Any], shape: list[int]) -> Tensor:
    return Tensor(shape=shape, dtype="float32", values=values)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[1, 2]", 'expected a JSON object with a "type"'),
        ('{"type": "dance"}', "Input tag 'dance' found using 'type' does not match"),
        ('{"type": "evaluate_result", "round": 1, "loss": 0.5}', "evaluate_result.num_examples: Field required"),
        (
            '{"type": "fit_result", "round": 1, "weights": [], "num_examples": 5, "metrics": {"accuracy": "high"}}',
            "fit_result.metrics.accuracy: Input should be a valid number",
        ),
        ('{"type": "join", "name": "' + "n" * 65 + '"}', "join.name: String should have at most 64 characters"),
        ('{"type": "ping", "x": ' + "9" * 5000 + "}", "not usable JSON: ValueError"),
    ],
)
def test_a_bad_message_is_named_in_one_line(text: str, error: str) -> None:
    with pytest.raises(BadMessage) as raised:
        parse_participant_message(text)
    assert error in str(raised.value) and "\n" not in str(raised.value)


def test_a_good_answer_parses_and_nan_is_left_for_the_servers_validation() -> None:
    message = parse_participant_message('{"type": "evaluate_result", "round": 2, "loss": NaN, "num_examples": 7}')
    assert isinstance(message, EvaluateResultMessage) and message.num_examples == 7 and np.isnan(message.loss)
    weights = arrays(
        [
            tensor([[float("nan")] * 32] * 784, [784, 32]),
            tensor([0] * 32, [32]),
            tensor([[1.5] * 10] * 32, [32, 10]),
            tensor(list(range(10)), [10]),
        ],
        DENSE32,
    )
    assert [w.dtype for w in weights] == [np.float32] * 4 and np.isnan(weights[0]).all() and weights[3][9] == 9.0


@pytest.mark.parametrize(
    ("sent", "expected", "error"),
    [
        ([tensor([1.0] * 10, [10])], [(10,), (10,)], "weights: expected 2 tensors, got 1"),
        ([tensor([1.0] * 9, [9])], [(10,)], "weights.0: expected shape [10], got [9]"),
        ([tensor([[1.0], [1.0, 2.0]] + [[1.0]] * 8, [10])], [(10,)], "weights.0: values are not a rectangular array"),
        ([tensor([True] * 10, [10])], [(10,)], "weights.0: values must be numbers"),
        ([tensor(["1.5"] * 10, [10])], [(10,)], "weights.0: values must be numbers"),
        ([tensor([1.0] * 10, [5, 2])], [(10,)], "weights.0: the shape field says [5, 2], the values are [10]"),
    ],
)
def test_weights_must_have_the_shapes_that_were_sent(
    sent: list[Tensor], expected: list[tuple[int, ...]], error: str
) -> None:
    with pytest.raises(BadMessage) as raised:
        arrays(sent, expected)
    assert str(raised.value) == error


def test_only_dense_networks_from_784_pixels_to_10_classes_are_read_off_the_shapes() -> None:
    assert dense_layer_sizes(DENSE32) == [784, 32, 10]
    assert dense_layer_sizes([(784, 128), (128,), (128, 10), (10,)]) == [784, 128, 10]
    assert dense_layer_sizes([(3, 3, 1, 8), (8,), (400, 10), (10,)]) is None  # The cnn.
    assert dense_layer_sizes([(784, 32), (32,), (32, 5), (5,)]) is None
    assert dense_layer_sizes([(784, 32), (31,), (32, 10), (10,)]) is None
    assert dense_layer_sizes([(784, 10)]) is None


def test_the_size_cap_holds_the_largest_fit_result_python_and_javascript_write() -> None:
    # The mlp's 101,770 weights, each a float32 written at full double precision, negative and small.
    weights = [np.full(shape, -1.2345678e-05, np.float32) for shape in [(784, 128), (128,), (128, 10), (10,)]]
    answer = json.dumps(
        {
            "type": "fit_result",
            "round": 40,
            "num_examples": 60000,
            "weights": [{"shape": list(w.shape), "dtype": "float32", "values": w.tolist()} for w in weights],
            "metrics": {"accuracy": 0.123456789, "loss": 1.23456789},
        }
    )
    weight_count = sum(w.size for w in weights)
    assert weight_count == 101_770
    assert len(answer) < message_cap(weight_count) < 1.3 * len(answer)  # Room, but not much more.


def test_a_federation_with_a_join_token_admits_only_who_shows_it() -> None:
    guarded = Federation(partitions=[0], join_token="s3cret")
    assert [guarded.admits(token) for token in (None, "", "s3cre", "s3cret!", "S3CRET", "s3cret")] == [False] * 5 + [
        True
    ]
    assert Federation(partitions=[0]).admits(None)  # No token set: anyone may join, as before.


def test_places_go_lowest_first_and_come_back_when_freed() -> None:
    federation = Federation(partitions=[4, 2, 3])
    assert [federation.take_place(None), federation.take_place(4)] == [2, 4]
    with pytest.raises(BadMessage, match="partition 4 is not free for WebSocket clients; free: \\[3\\]"):
        federation.take_place(4)
    assert federation.take_place(None) == 3
    with pytest.raises(BadMessage, match="all 3 WebSocket places are taken"):
        federation.take_place(None)
    federation.free_place(2)
    assert federation.take_place(None) == 2
    with pytest.raises(BadMessage, match="--ws-clients"):
        Federation().take_place(None)


def test_the_data_message_holds_exactly_the_rows_client_py_trains_on(mnist_5k: MnistData, data_home: str) -> None:
    from fedmnist.data.sources import client_data

    federation = Federation(partitions=[1], data_home=data_home)
    config = {"dataset": "mnist-5k", "num-partitions": 3, "seed": 7, "partition": "shards:2", "model": "dense32"}
    message = federation.partition(1, config)
    share = client_data(mnist_5k, 1, 3, 7, partition="shards:2")
    assert message.train == rows(share.x_train, share.y_train) and message.validation.labels == share.y_val.tolist()
    assert len(set(message.train.labels)) < 10  # Two shards of the label-sorted rows: not every digit.


def test_docs_list_the_websocket_message_schemas(tmp_path: Path) -> None:
    spec = TestClient(create_app(tmp_path)).get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in (
        "JoinMessage",
        "WelcomeMessage",
        "DataMessage",
        "FitMessage",
        "FitResultMessage",
        "EvaluateMessage",
        "EvaluateResultMessage",
        "EndMessage",
        "ParticipantError",
    ):
        assert name in schemas
    assert schemas["FitResultMessage"]["properties"]["weights"]["items"] == {"$ref": "#/components/schemas/Tensor"}
    assert "WS /ws/events" in spec["info"]["description"]


def test_the_client_page_and_tensorflow_js_are_served_offline(tmp_path: Path) -> None:
    client = TestClient(create_app(tmp_path))
    page = client.get("/client")
    assert page.status_code == 200 and "/static/vendor/tf.es2017.min.js" in page.text and "//cdn" not in page.text
    library = client.get("/static/vendor/tf.es2017.min.js")
    assert library.status_code == 200 and len(library.content) > 1_000_000


def test_a_participant_whose_flower_server_never_comes_is_told_and_let_go(tmp_path: Path) -> None:
    from conftest import free_port

    federation = Federation(flower_server=f"127.0.0.1:{free_port()}", partitions=[0], connect_timeout=1.0)
    with TestClient(create_app(tmp_path, federation=federation)).websocket_connect("/ws") as socket:
        socket.send_text('{"type": "join"}')
        assert socket.receive_json()["type"] == "welcome"
        end = socket.receive_json()
    assert end == {
        "type": "end",
        "finished": False,
        "reason": f"could not reach the Flower server at {federation.flower_server} within 1 s "
        "(UNAVAILABLE); is its run going?",
    }
    assert federation.take_place(None) == 0  # The place is free again.


def test_every_dense_model_fits_the_dashboards_message_cap() -> None:
    """WebSocket clients train every dense model, the paper's 2nn (199,210 weights) too; its answers fit the cap."""
    from fedmnist.dashboard.serve import uvicorn_server
    from fedmnist.model.keras_model import build_model
    from fedmnist.settings import defaults

    assert set(defaults.DENSE_MODELS) == {"mlp", "dense32", "2nn"}
    cap = uvicorn_server(object(), "127.0.0.1", 0).config.ws_max_size
    for model in defaults.DENSE_MODELS:
        weights = build_model(0, model).get_weights()
        assert defaults.dense_weight_count(model) == sum(w.size for w in weights), model
        assert dense_layer_sizes([w.shape for w in weights]) is not None, model
        assert cap >= message_cap(sum(w.size for w in weights)), model


# The NumPy client (examples/ws_client.py) does Keras's maths.


def test_numpy_client_forward_pass_gradients_and_adam_step_match_keras(mnist_5k: MnistData) -> None:
    import keras
    import tensorflow as tf

    from fedmnist.model.keras_model import build_model

    ws_client = load_ws_client()
    model = build_model(3, "dense32")
    x, y = to_float(mnist_5k.x_train[:32]), mnist_5k.y_train[:32].astype(np.int64)
    network = ws_client.DenseNetwork(seed=0)
    network.set_weights([w.copy() for w in model.get_weights()])

    outputs = network._forward(x)
    np.testing.assert_allclose(outputs[-1], model(x).numpy(), atol=1e-6)
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy()(y, model(x))
    keras_gradients = tape.gradient(loss, model.trainable_variables)
    gradients = network._gradients(outputs, y)
    for mine, theirs in zip(gradients, keras_gradients, strict=True):
        np.testing.assert_allclose(mine, theirs.numpy(), atol=1e-6)

    optimizer = keras.optimizers.Adam(learning_rate=0.01)
    for _ in range(2):  # Two steps: the second uses the moments of the first.
        optimizer.apply_gradients(zip(keras_gradients, model.trainable_variables, strict=True))
        network._adam(gradients, 0.01)
    for mine, theirs in zip(network.weights, model.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, atol=1e-6)


def test_numpy_client_learns_mnist_in_a_few_epochs(mnist_5k: MnistData) -> None:
    ws_client = load_ws_client()
    network = ws_client.DenseNetwork(seed=0)
    rng = np.random.default_rng(0)
    network.set_weights([rng.normal(0, 0.05, shape).astype(np.float32) for shape in DENSE32])
    x, y = to_float(mnist_5k.x_train), mnist_5k.y_train.astype(np.int64)
    before, _ = network.evaluate(to_float(mnist_5k.x_test), mnist_5k.y_test.astype(np.int64))
    for _ in range(3):
        network.train_epoch(x, y, 32, 0.001)
    loss, accuracy = network.evaluate(to_float(mnist_5k.x_test), mnist_5k.y_test.astype(np.int64))
    assert accuracy > 0.85 and loss < before / 3
