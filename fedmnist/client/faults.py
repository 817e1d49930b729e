"""Clients that misbehave on purpose (``client.py --fault``), for tests and demos.

* ``nan``: every update is full of NaN.
* ``shape``: the update lacks its last array (a different model).
* ``scale``: the update moves 100 times farther from the global model than it trained.
* ``crash-at-round:N``: the client is gone from round N on. A ``client.py`` process
  dies (exit status 3) when round N's training starts; a ClientApp, whose process
  serves other clients too (a simulation's Ray worker), fails every message of
  round N and later instead.
* ``drop-at-round:N``: round N's training fails and the client sends no update,
  but its process lives on (a ClientApp: a Ray worker serves other clients too).
* an attack of ``fedmnist.attacks.catalogue`` (``sign-flip``, ``ipm``, ``lie``,
  ``label-flip``, ``free-rider``, ``backdoor``): updates that pass every check
  (``fedmnist.client.attacker`` runs them).

The server's update validation (``fedmnist.server.validation``) should reject the
first three and carry on without the last two; SecAgg+ should unmask the
others' sum without a client that dropped mid-protocol.

A ClientApp takes its fault from its node config (``flower-supernode
--node-config "... fault='drop-at-round:2'"``), or, in a simulation, whose
virtual nodes have no config of their own, from ``FEDMNIST_FAULTS``
(``PARTITION=FAULT[,PARTITION=FAULT]``) in the environment Ray's workers inherit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.common import Context, Error, Message, NDArrays
from flwr.common.constant import ErrorCode

from fedmnist.attacks.catalogue import ATTACKS

NAN, SHAPE, SCALE, CRASH, DROP = "nan", "shape", "scale", "crash-at-round", "drop-at-round"
SCALE_FACTOR = 100.0
CRASH_EXIT_STATUS = 3
FAULTS_VARIABLE = "FEDMNIST_FAULTS"


class InjectedDrop(RuntimeError):
    """A ``drop-at-round:N`` client's training in round N."""


def parse_fault(text: str) -> str:
    """``nan``, ``shape``, ``scale``, ``crash-at-round:N``, ``drop-at-round:N`` (N >= 1) or an attack; else ValueError."""
    kind, _, value = text.partition(":")
    if kind in (NAN, SHAPE, SCALE, *ATTACKS) and not value:
        return kind
    if kind in (CRASH, DROP) and value.isdigit() and int(value) >= 1:
        return text
    raise ValueError(
        f"unknown fault {text!r}; use nan, shape, scale, crash-at-round:N, drop-at-round:N or an attack "
        f"({', '.join(ATTACKS)})"
    )


def node_fault(partition_id: int, node_config: Mapping[str, Any]) -> str | None:
    """A ClientApp node's fault: its node config's ``fault``, else its entry in ``FEDMNIST_FAULTS``."""
    if "fault" in node_config:
        return parse_fault(str(node_config["fault"]))
    for entry in filter(None, os.environ.get(FAULTS_VARIABLE, "").split(",")):
        partition, _, fault = entry.partition("=")
        if partition.strip() == str(partition_id):
            return parse_fault(fault.strip())
    return None


def fault_mod(message: Message, context: Context, call_next: Any) -> Message:
    """A ClientApp's mod: an injected drop-out answers as an error, as Flower answers for a client gone away.

    Raised through Flower instead, it would print a traceback for a failure
    that was asked for.
    """
    try:
        return call_next(message, context)
    except InjectedDrop as drop:
        return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=str(drop)), reply_to=message)


def fail_if_due(fault: str | None, server_round: int, own_process: bool = True) -> None:
    """Before training: fail this message if ``fault`` drops out of this round, or crash (``fail_if_crashed``)."""
    kind, _, value = (fault or "").partition(":")
    if kind == DROP and server_round == int(value):
        raise InjectedDrop(f"fault injected: dropping out of round {server_round}")
    fail_if_crashed(fault, server_round, own_process)


def fail_if_crashed(fault: str | None, server_round: int, own_process: bool = True) -> None:
    """From round N on, a ``crash-at-round:N`` client answers nothing.

    ``own_process``: the process is this client's alone (``client.py``), so the
    crash ends it; else (a ClientApp) each message fails, as ending a Ray worker
    would take the other clients it serves with it.
    """
    kind, _, value = (fault or "").partition(":")
    if kind != CRASH or server_round < int(value):
        return
    if not own_process:
        raise InjectedDrop(f"fault injected: crashed at round {value}")
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
