#!/usr/bin/env python3
"""A federated MNIST client in plain NumPy: no Flower, no TensorFlow, just JSON over a WebSocket.

It joins a fedmnist run at the dashboard's ``WS /ws`` (docs/dashboard.md: "Clients over
WebSocket"), receives its share of the training rows, and every round trains
the global dense network (784-32-10 for ``--model dense32``, 784-128-10 for
``mlp``) with Adam, exactly the maths Keras does, then sends the weights back.
Anything that can speak JSON over a WebSocket can take part the same way.

    ./run.sh --clients 3 --ws-clients 2 --model dense32   # waits for 2 WebSocket clients, prints a join token
    .venv/bin/python examples/ws_client.py --token TOKEN   # twice, in two terminals

Needs only ``numpy`` and ``websockets`` (both in the project's .venv).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from typing import Any
from urllib.parse import quote

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

PIXELS = 784


class DenseNetwork:
    """A dense network read off the weights' shapes: ReLU between layers, softmax at the end.

    ``train_epoch`` is one pass of mini-batch Adam on the cross-entropy loss, as
    Keras's ``Adam`` (beta 0.9/0.999, epsilon 1e-7) and sparse categorical
    cross-entropy do it; the optimizer's moments persist between rounds, like a
    Keras model that keeps its optimizer.
    """

    def __init__(self, seed: int) -> None:
        self.weights: list[np.ndarray] = []
        self.rng = np.random.default_rng(seed)
        self.moments: list[tuple[np.ndarray, np.ndarray]] = []
        self.steps = 0

    def set_weights(self, weights: list[np.ndarray]) -> None:
        if [w.shape for w in weights] != [w.shape for w in self.weights]:
            self.moments = [(np.zeros_like(w), np.zeros_like(w)) for w in weights]
        self.weights = [w.astype(np.float32) for w in weights]

    def _forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Every layer's output, the input first; the last is the class probabilities."""
        outputs = [x]
        layers = len(self.weights) // 2
        for index in range(layers):
            z = outputs[-1] @ self.weights[2 * index] + self.weights[2 * index + 1]
            outputs.append(np.maximum(z, 0.0) if index < layers - 1 else _softmax(z))
        return outputs

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Mean cross-entropy loss and accuracy on ``x``, ``y``."""
        probabilities = self._forward(x)[-1]
        return _loss(probabilities, y), float(np.mean(probabilities.argmax(axis=1) == y))

    def train_epoch(self, x: np.ndarray, y: np.ndarray, batch_size: int, learning_rate: float) -> tuple[float, float]:
        """One shuffled pass over ``x``; the mean loss and accuracy over its batches, as Keras reports them."""
        order = self.rng.permutation(len(y))
        losses, hits = [], 0
        for start in range(0, len(y), batch_size):
            batch = order[start : start + batch_size]
            outputs = self._forward(x[batch])
            probabilities = outputs[-1]
            losses.append(_loss(probabilities, y[batch]) * len(batch))
            hits += int(np.sum(probabilities.argmax(axis=1) == y[batch]))
            self._adam(self._gradients(outputs, y[batch]), learning_rate)
        return float(np.sum(losses) / len(y)), hits / len(y)

    def _gradients(self, outputs: list[np.ndarray], y: np.ndarray) -> list[np.ndarray]:
        """Backpropagation of the batch's mean cross-entropy through softmax, dense and ReLU layers."""
        delta = outputs[-1].copy()
        delta[np.arange(len(y)), y] -= 1.0
        delta /= len(y)
        gradients: list[np.ndarray] = []
        for index in reversed(range(len(self.weights) // 2)):
            gradients[:0] = [outputs[index].T @ delta, delta.sum(axis=0)]
            if index > 0:
                delta = (delta @ self.weights[2 * index].T) * (outputs[index] > 0)
        return gradients

    def _adam(
        self,
        gradients: list[np.ndarray],
        learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-7,
    ) -> None:
        self.steps += 1
        step = learning_rate * np.sqrt(1 - beta2**self.steps) / (1 - beta1**self.steps)
        for weight, gradient, (m, v) in zip(self.weights, gradients, self.moments, strict=True):
            m += (1 - beta1) * (gradient - m)
            v += (1 - beta2) * (gradient * gradient - v)
            weight -= (step * m / (np.sqrt(v) + epsilon)).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    exp = np.exp(z - z.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _loss(probabilities: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(y)), y], 1e-7, 1.0))))


def decode_rows(rows: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A ``data`` message's rows as float32 pixels in [0, 1] and int labels."""
    pixels = np.frombuffer(base64.b64decode(rows["pixels"]), dtype=np.uint8).reshape(rows["count"], PIXELS)
    return pixels.astype(np.float32) / 255.0, np.asarray(rows["labels"], dtype=np.int64)


def decode_weights(tensors: list[dict[str, Any]]) -> list[np.ndarray]:
    return [np.asarray(t["values"], dtype=np.float32).reshape(t["shape"]) for t in tensors]


def encode_weights(weights: list[np.ndarray]) -> list[dict[str, Any]]:
    return [{"shape": list(w.shape), "dtype": "float32", "values": w.tolist()} for w in weights]


def take_part(url: str, name: str, partition: int | None) -> tuple[str, bool]:
    """Join at ``url`` and answer the server until it ends the run: why it ended, and whether the run finished."""
    network = DenseNetwork(seed=0)
    train: tuple[np.ndarray, np.ndarray] | None = None
    validation: tuple[np.ndarray, np.ndarray] | None = None
    # The server is trusted to send big messages (the data); our own are capped by the server.
    with connect(url, max_size=None, open_timeout=30) as socket:
        socket.send(json.dumps({"type": "join", "name": name, "partition": partition}))
        for text in socket:
            message = json.loads(text)
            kind = message["type"]
            if kind == "welcome":
                print(f"{name}: joined as partition {message['partition']} of the run at {message['flower_server']}")
            elif kind == "data":
                train, validation = decode_rows(message["train"]), decode_rows(message["validation"])
                network.rng = np.random.default_rng(message["partition"])
                print(f"{name}: {len(train[1])} training and {len(validation[1])} validation images")
            elif kind == "fit":
                assert train is not None, "the server sends the data before the first instruction"
                socket.send(json.dumps(fit(network, message, train)))
            elif kind == "evaluate":
                assert validation is not None, "the server sends the data before the first instruction"
                network.set_weights(decode_weights(message["weights"]))
                loss, accuracy = network.evaluate(*validation)
                socket.send(
                    json.dumps(
                        {
                            "type": "evaluate_result",
                            "round": message["round"],
                            "loss": loss,
                            "num_examples": len(validation[1]),
                            "metrics": {"accuracy": accuracy},
                        }
                    )
                )
            elif kind == "error":
                print(f"{name}: server says: {message['error']}", file=sys.stderr)
            elif kind == "end":
                return message["reason"], message["finished"]
    return "the server closed the connection", False


def fit(network: DenseNetwork, message: dict[str, Any], train: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Train the round's global weights as its config says; the ``fit_result`` to send back."""
    settings = message["config"]  # The dashboard's seat refuses a server whose config lacks a setting.
    network.set_weights(decode_weights(message["weights"]))
    for _ in range(int(settings["local-epochs"])):
        loss, accuracy = network.train_epoch(*train, int(settings["batch-size"]), float(settings["learning-rate"]))
    print(
        f"round {message['round']}: trained on {len(train[1])} images, accuracy {accuracy:.1%}, loss {loss:.3f}",
        flush=True,
    )
    return {
        "type": "fit_result",
        "round": message["round"],
        "weights": encode_weights(network.weights),
        "num_examples": len(train[1]),
        "metrics": {"accuracy": accuracy, "loss": loss},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--url", default="ws://127.0.0.1:10000/ws", help="the dashboard's /ws (default: %(default)s)")
    parser.add_argument("--token", default=None, help="the run's join token, if --url does not carry it (?token=...)")
    parser.add_argument("--name", default="numpy client", help="shown in the dashboard's log")
    parser.add_argument("--partition", type=int, default=None, help="ask for this partition (default: any free one)")
    args = parser.parse_args()
    url = args.url if args.token is None else f"{args.url}{'&' if '?' in args.url else '?'}token={quote(args.token)}"
    try:
        reason, finished = take_part(url, args.name, args.partition)
    except (OSError, ConnectionClosed) as error:
        sys.exit(f"error: lost the connection to {args.url}: {error}")
    except KeyboardInterrupt:
        sys.exit(130)
    if not finished:
        sys.exit(f"error: {args.name}: {reason}")
    print(f"{args.name}: {reason}")


if __name__ == "__main__":
    main()
