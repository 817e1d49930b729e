"""Per-round checkpoints, so an interrupted run can continue (``--resume``).

After every round the server writes ``OUT/checkpoints/checkpoint_<rounds>.pkl``
(``RunPaths.checkpoint``)
atomically: the round number, the global weights, the strategy's state (server
momentum, FedAdam's moments, ...), every round's record so far and the run's
config. ``--resume`` with the same ``--out`` and settings loads it and runs the
remaining rounds; the History it saves has every round, as an uninterrupted
run's would.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.common import EvaluateIns, EvaluateRes, FitIns, FitRes, NDArrays, Parameters, Scalar
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from fedmnist.atomic import write_atomic
from fedmnist.errors import UserError
from fedmnist.strategy import DelegatingStrategy

# Settings a checkpoint must share with the run that resumes it.
IDENTITY_KEYS = ("rounds", "clients", "dataset", "seed", "partition", "model", "strategy", "fraction_fit",
                 "proximal_mu", "local_epochs", "batch_size", "learning_rate")


@dataclass
class Checkpoint:
    """Everything needed to continue a run after ``round``."""

    round: int
    weights: NDArrays
    strategy_state: dict[str, Any]
    records: list[dict[str, Any]]
    initial: dict[str, Any] | None
    config: dict[str, Any]
    data_source: str


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    write_atomic(path, lambda handle: pickle.dump(checkpoint, handle))


def load_checkpoint(path: Path, config: dict[str, Any]) -> Checkpoint:
    """Read the checkpoint at ``path`` and check it belongs to a run with ``config``."""
    if not path.exists():
        raise UserError(f"nothing to resume: no checkpoint at {path} (same --out and --rounds as the run?)")
    try:
        with open(path, "rb") as handle:
            checkpoint = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as error:
        raise UserError(f"cannot read checkpoint {path}: {error}") from None
    if not isinstance(checkpoint, Checkpoint):
        raise UserError(f"{path} is not a fedmnist checkpoint")
    different = [
        f"{key} {checkpoint.config.get(key)!r} there, {config.get(key)!r} now"
        for key in IDENTITY_KEYS
        if checkpoint.config.get(key) != config.get(key)
    ]
    if different:
        raise UserError(f"checkpoint {path} is from a different run: {'; '.join(different)}")
    if checkpoint.round >= config["rounds"]:
        raise UserError(f"the run in {path} already finished all {checkpoint.round} rounds; nothing to resume")
    return checkpoint


def strategy_state(strategy: Strategy) -> dict[str, Any]:
    """The strategy's data attributes (not its callbacks): what a resumed run must restore.

    For FedAvgM that is the server momentum and current weights; for FedAdam
    and FedYogi the current weights and both moment estimates.
    """
    # None is skipped: a fresh strategy has the same None, and a callback that was None
    # when saved must not erase one the resuming server set.
    return {name: value for name, value in vars(strategy).items() if value is not None and not callable(value)}


def restore_strategy_state(strategy: Strategy, state: dict[str, Any]) -> None:
    vars(strategy).update(state)


class RoundOffsetStrategy(DelegatingStrategy):
    """Renumbers Flower's rounds 1..N as ``offset + 1 .. offset + N`` for everything inside.

    Flower's classic server always counts rounds from 1; a resumed run after
    round ``offset`` thereby keeps the run's own numbering. Round 0, the
    evaluation of the starting weights, stays 0.
    """

    def __init__(self, inner: Strategy, offset: int) -> None:
        self.inner = inner
        self.offset = offset

    def _shift(self, server_round: int) -> int:
        return server_round + self.offset if server_round else 0

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        return self.inner.configure_fit(self._shift(server_round), parameters, client_manager)

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        return self.inner.aggregate_fit(self._shift(server_round), results, failures)

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return self.inner.configure_evaluate(self._shift(server_round), parameters, client_manager)

    def aggregate_evaluate(
        self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]], failures: list[Any]
    ) -> tuple[float | None, dict[str, Scalar]]:
        return self.inner.aggregate_evaluate(self._shift(server_round), results, failures)

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        return self.inner.evaluate(self._shift(server_round), parameters)
