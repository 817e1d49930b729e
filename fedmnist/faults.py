"""Clients that misbehave on purpose (``client.py --fault``), for tests and demos.

* ``nan``: every update is full of NaN.
* ``shape``: the update lacks its last array (a different model).
* ``scale``: the update moves 100 times farther from the global model than it trained.
* ``crash-at-round:N``: the process dies (exit status 3) when round N's training starts.

The server's update validation (``fedmnist.validation``) should reject the
first three and carry on without the fourth.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from flwr.common import NDArrays

NAN, SHAPE, SCALE, CRASH = "nan", "shape", "scale", "crash-at-round"
SCALE_FACTOR = 100.0
CRASH_EXIT_STATUS = 3


def parse_fault(text: str) -> str:
    """``nan``, ``shape``, ``scale`` or ``crash-at-round:N`` (N >= 1); else ValueError."""
    kind, _, value = text.partition(":")
    if kind in (NAN, SHAPE, SCALE) and not value:
        return kind
    if kind == CRASH and value.isdigit() and int(value) >= 1:
        return text
    raise ValueError(f"unknown fault {text!r}; use nan, shape, scale or crash-at-round:N")


def crash_if_due(fault: str | None, server_round: int) -> None:
    """End the process abruptly, as a crash would, when ``fault`` says this round."""
    if fault and fault.startswith(CRASH) and server_round == int(fault.partition(":")[2]):
        print(f"fault injected: crashing at round {server_round}", file=sys.stderr, flush=True)
        os._exit(CRASH_EXIT_STATUS)


def corrupt(fault: str | None, trained: NDArrays, start: NDArrays) -> NDArrays:
    """The update a client with ``fault`` sends instead of ``trained`` (which began at ``start``)."""
    if fault == NAN:
        return [np.full_like(w, np.nan) for w in trained]
    if fault == SHAPE:
        return trained[:-1]
    if fault == SCALE:
        return [s + SCALE_FACTOR * (w - s) for w, s in zip(trained, start)]
    return trained
