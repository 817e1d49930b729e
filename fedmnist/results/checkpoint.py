"""Per-round checkpoints, so an interrupted run can continue (``--resume``).

After every round the server writes ``OUT/checkpoints/checkpoint_<rounds>.npz``
(``RunPaths.checkpoint``) atomically: the round number, the global weights, the
strategy's state (server momentum, FedAdam's moments, ...), every round's
record so far and the run's config. ``--resume`` with the same ``--out`` and
settings loads it and runs the remaining rounds; the History it saves has every
round, as an uninterrupted run's would.

The file holds only arrays and one JSON document (the ``meta`` entry) and is
read with ``allow_pickle=False``: a crafted checkpoint cannot run code, unlike
the pickles earlier versions wrote (which are refused, with a message).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common import NDArrays, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import Strategy

from fedmnist.common.atomic import write_atomic
from fedmnist.common.errors import UserError
from fedmnist.results.records import Evaluation, RoundRecord
from fedmnist.settings.server_settings import ServerSettings

# Settings a checkpoint must share with the run that resumes it.
IDENTITY_KEYS = (
    "rounds",
    "clients",
    "dataset",
    "seed",
    "partition",
    "model",
    "strategy",
    "fraction_fit",
    "proximal_mu",
    "server_momentum",
    "server_learning_rate",
    "local_epochs",
    "batch_size",
    "learning_rate",
    "dp_noise",
    "dp_clip",
    "dp_side",
    "dp_delta",
)  # Not the budget: a resume may spend more.
FORMAT = "fedmnist-checkpoint-1"


@dataclass
class Checkpoint:
    """Everything needed to continue a run after ``round``."""

    round: int
    weights: NDArrays
    strategy_state: dict[str, Any]
    records: list[RoundRecord]
    initial: Evaluation | None
    config: dict[str, Any]
    data_source: str


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` as one ``.npz``: its arrays, and the rest as JSON in ``meta``."""
    arrays = {f"weights/{i}": array for i, array in enumerate(checkpoint.weights)}
    state: dict[str, Any] = {}
    for name, value in checkpoint.strategy_state.items():
        kind, value_arrays = _encode(value)
        state[name] = kind
        arrays.update({f"state/{name}/{i}": array for i, array in enumerate(value_arrays)})
    meta = {
        "format": FORMAT,
        "round": checkpoint.round,
        "weights": len(checkpoint.weights),
        "strategy_state": state,
        "records": checkpoint.records,
        "initial": checkpoint.initial,
        "config": checkpoint.config,
        "data_source": checkpoint.data_source,
    }
    arrays["meta"] = np.array(json.dumps(meta))
    # NumPy's stub types **kwds as if a key could be allow_pickle; these keys are array names.
    write_atomic(path, lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint file; raises ValueError (with the reason) when it is not a valid one."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(str(arrays.pop("meta")))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError("not a fedmnist checkpoint")
        weights = [arrays[f"weights/{i}"] for i in range(int(meta["weights"]))]
        state = {
            name: _decode(kind, [arrays[key] for key in _numbered(arrays, f"state/{name}/")])
            for name, kind in meta["strategy_state"].items()
        }
        return Checkpoint(
            round=int(meta["round"]),
            weights=weights,
            strategy_state=state,
            records=list(meta["records"]),
            initial=meta["initial"],
            config=dict(meta["config"]),
            data_source=str(meta["data_source"]),
        )
    except (KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"not a fedmnist checkpoint ({type(error).__name__}: {error})") from None


def load_checkpoint(path: Path, config: dict[str, Any]) -> Checkpoint:
    """Read the checkpoint at ``path`` and check it belongs to a run with ``config``."""
    if not path.exists():
        legacy = path.with_suffix(".pkl")
        if legacy.exists():
            raise UserError(
                f"{legacy} is a pickle from an older fedmnist, which this version does not load "
                "(unpickling a file can run code); start the run afresh"
            )
        raise UserError(f"nothing to resume: no checkpoint at {path} (same --out and --rounds as the run?)")
    try:
        checkpoint = read_checkpoint(path)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read checkpoint {path}: {error}") from None
    # A checkpoint from before a setting existed ran with its default.
    defaults = {f.name: f.default for f in fields(ServerSettings)}
    theirs = {key: checkpoint.config.get(key, defaults.get(key)) for key in IDENTITY_KEYS}
    different = [
        f"{key} {theirs[key]!r} there, {config.get(key)!r} now"
        for key in IDENTITY_KEYS
        if theirs[key] != config.get(key)
    ]
    if different:
        raise UserError(f"checkpoint {path} is from a different run: {'; '.join(different)}")
    if checkpoint.round >= config["rounds"]:
        raise UserError(f"the run in {path} already finished all {checkpoint.round} rounds; nothing to resume")
    return checkpoint


def strategy_state(strategy: Strategy) -> dict[str, Any]:
    """The strategy's data attributes: what a resumed run must restore.

    For FedAvgM that is the server momentum and current weights; for FedAdam
    and FedYogi the current weights and both moment estimates. Only numbers,
    strings, arrays, lists of arrays and Flower ``Parameters`` are kept: a
    callback, or anything a checkpoint could not hold as data, is not state.
    """
    inner = getattr(strategy, "strategy", None)
    if isinstance(inner, Strategy):  # Flower's DP wrappers (fedmnist.privacy.dp) keep theirs in the strategy they wrap.
        return strategy_state(inner)
    # None is skipped: a fresh strategy has the same None, and a callback that was None
    # when saved must not erase one the resuming server set.
    return {name: value for name, value in vars(strategy).items() if _encodable(value)}


def restore_strategy_state(strategy: Strategy, state: dict[str, Any]) -> None:
    vars(strategy).update(state)


def _encodable(value: Any) -> bool:
    if isinstance(value, (bool, int, float, str, np.ndarray, Parameters)):
        return True
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, np.ndarray) for v in value)


def _encode(value: Any) -> tuple[dict[str, Any], NDArrays]:
    """How a state value is stored: a JSON description and the arrays that go with it."""
    if isinstance(value, Parameters):
        return {"kind": "parameters"}, parameters_to_ndarrays(value)
    if isinstance(value, np.ndarray):
        return {"kind": "array"}, [value]
    if isinstance(value, (list, tuple)):
        return {"kind": "arrays"}, list(value)
    return {"kind": "scalar", "value": value}, []


def _decode(kind: dict[str, Any], arrays: NDArrays) -> Any:
    if kind["kind"] == "parameters":
        return ndarrays_to_parameters(arrays)
    if kind["kind"] == "array":
        return arrays[0]
    if kind["kind"] == "arrays":
        return arrays
    if kind["kind"] == "scalar":
        return kind["value"]
    raise ValueError(f"unknown state kind {kind['kind']!r}")


def _numbered(arrays: dict[str, np.ndarray], prefix: str) -> list[str]:
    """The keys ``prefix0``, ``prefix1``, ... in order."""
    return sorted((key for key in arrays if key.startswith(prefix)), key=lambda key: int(key[len(prefix) :]))
