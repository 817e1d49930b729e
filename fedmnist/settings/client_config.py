"""The config every round carries to the clients, derived from the settings marked ``to_clients``.

A client setting is declared once, as a ``ServerSettings`` field with
``to_clients="key"`` (``fedmnist.settings.server_settings``); the server sends
``config_for_clients`` with every fit and evaluate, and clients refuse a config
that lacks any of ``client_keys`` rather than guess the run's settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from functools import cache
from typing import Any

from fedmnist.settings.server_settings import ServerSettings

# What every round's config carries besides the settings: the round, and which server run it is.
ROUND_KEYS = ("server-round", "run-id")


@cache  # Asked on every message; the settings' fields never change.
def client_keys() -> tuple[str, ...]:
    """Every key of the config the clients get each round; a client refuses a config that lacks one."""
    return (*ROUND_KEYS, *(f.metadata["to_clients"] for f in fields(ServerSettings) if f.metadata["to_clients"]))


def missing_keys(config: Mapping[str, Any]) -> str:
    """Why ``config`` cannot be a fedmnist round's config (the keys it lacks), or "" when it has them all."""
    missing = [key for key in client_keys() if key not in config]
    if not missing:
        return ""
    return (
        f"the server sent no {', '.join(missing)} (a fedmnist server, server.py or ./run.sh, "
        "sends the run's settings with every round)"
    )


def config_for_clients(settings: ServerSettings, data_source: str, run_id: str) -> Callable[[int], dict[str, Any]]:
    """The config sent to clients with every fit and evaluate: each ``to_clients`` setting, and the round.

    The server is the clients' only source of the run's settings: local training
    (``keep-optimizer``: Adam goes on from the client's last round instead of
    starting afresh), and how each client cuts its rows and builds its model
    (``fedmnist.client.flower_client.PartitionClient``); a client started for another
    ``num-partitions`` refuses the run. ``dataset`` is the concrete source the server
    resolved (``auto`` becomes ``openml`` or ``mnist-5k``). ``run-id`` tells a sweep's
    runs apart, so clients start each one afresh.
    """
    carried = {
        f.metadata["to_clients"]: getattr(settings, f.name) for f in fields(settings) if f.metadata["to_clients"]
    }
    base = {**carried, "dataset": data_source, "run-id": run_id}
    return lambda server_round: {"server-round": server_round, **base}
