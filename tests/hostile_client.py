"""Flower clients that attack the server, for the hardening tests: real NumPyClients, no TensorFlow.

    python tests/hostile_client.py HOST:PORT ATTACK [ATTACK ...]

Starts one client per ATTACK in this process (threads), each speaking Flower's
grpc-bidi protocol to the real server. An honest one (``honest``) answers with
the global weights plus a small step, 100 examples and sensible metrics; the
others differ from it in one way each (``ATTACKS``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from flwr.client import NumPyClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from light_client import serve_in_threads

HONEST_EXAMPLES = 100


class HostileClient(NumPyClient):
    """An honest client except for ``attack``."""

    def __init__(self, attack: str, seed: int) -> None:
        self.attack = attack
        self.rng = np.random.default_rng(seed)

    def fit(self, parameters, config):
        step = [w + self.rng.normal(0, 1e-3, w.shape).astype(w.dtype) for w in parameters]
        metrics = {"accuracy": 0.5, "loss": 1.0}
        if self.attack == "string-metric":
            metrics["accuracy"] = "abc"
        if self.attack == "zero-model-huge-count":
            return [np.zeros_like(w) for w in parameters], 10**12, metrics
        if self.attack == "negative-count":
            return step, -1000, metrics
        if self.attack == "zero-count":
            return step, 0, metrics
        return step, HONEST_EXAMPLES, metrics

    def evaluate(self, parameters, config):
        if self.attack == "nan-loss":
            return float("nan"), HONEST_EXAMPLES, {"accuracy": 0.5, "loss": float("nan")}
        if self.attack == "no-accuracy":
            return 1.0, HONEST_EXAMPLES, {"loss": 1.0}
        return 1.0, HONEST_EXAMPLES, {"accuracy": 0.5, "loss": 1.0}


ATTACKS = (
    "honest",
    "string-metric",
    "zero-model-huge-count",
    "negative-count",
    "zero-count",
    "nan-loss",
    "no-accuracy",
)


def main(address: str, attacks: list[str]) -> None:
    serve_in_threads(address, [HostileClient(attack, seed).to_client() for seed, attack in enumerate(attacks)])


if __name__ == "__main__":
    unknown = set(sys.argv[2:]) - set(ATTACKS)
    if unknown:
        sys.exit(f"unknown attacks {sorted(unknown)}; choose from {', '.join(ATTACKS)}")
    main(sys.argv[1], sys.argv[2:])
