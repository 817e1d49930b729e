"""A ServerApp's federation step: Flower's legacy ``Server`` driven through the run's Grid.

The Grid is the ServerApp's link to the clients on the Simulation or the Deployment Runtime;
Flower's ``start_grid`` registers each SuperNode with the server's client manager as it appears,
so waiting for clients, sampling and timeouts behave as on the classic pair. With ``--secagg``
Flower's SecAgg+ workflow drives the same strategy and client manager instead
(``fedmnist.privacy.secagg``). On the simulation, whose workers stay up for the whole run, the
workers are warmed up first (``warm_up_workers``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING

from fedmnist.server.federation import Federation
from fedmnist.settings.server_settings import ServerSettings

if TYPE_CHECKING:
    from flwr.app import Context
    from flwr.common import GetPropertiesIns, Scalar
    from flwr.server import Server, ServerConfig
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.history import History
    from flwr.serverapp import Grid

log = logging.getLogger(__name__)
WARM_UP_WAIT_SECONDS = 30.0  # How long the warm-up waits for Flower to register the virtual clients.


class GridFederation(Federation):
    """The rounds through ``grid``, as the ServerApp of ``context`` runs them (SecAgg+ with ``--secagg``)."""

    def __init__(self, grid: Grid, context: Context, settings: ServerSettings) -> None:
        self.grid, self.context, self.settings = grid, context, settings

    def run(self, server: Server, config: ServerConfig, client_config: dict[str, Scalar]) -> History | None:
        settings = self.settings
        if settings.runtime == "simulation":  # The Deployment Runtime starts a process per message: none stays warm.
            warm_up_workers(self.grid, client_config, settings)
        if settings.secagg:
            from fedmnist.privacy.secagg import secagg_federation

            federate = secagg_federation(
                self.grid,
                self.context,
                settings.secagg_shares,
                settings.secagg_threshold,
                settings.round_timeout,
                equal_weights=settings.dp_noise is not None,
            )
            return federate(server, config)
        from flwr.server.compat import start_grid

        return start_grid(grid=self.grid, server=server, config=config)


def warm_up_workers(grid: Grid, client_config: dict[str, Scalar], settings: ServerSettings) -> None:
    """Have the simulation's workers get ready for the run now, beside the server's own start-up.

    A Ray worker's first message costs seconds (the data, the model and its
    tracing, after its TensorFlow import): most of round 1. Sent a warm-up
    (``ClientCache.warm_up``) as soon as the virtual clients appear, the
    workers do it while the server imports TensorFlow and evaluates the
    initial model. One message per client of round 1 reaches every worker
    round 1 will use; those beyond the first on a worker cost milliseconds.
    Nothing waits for them: a worker that fails to warm up fails round 1 with
    the same error, which the round's record then names.
    """
    threading.Thread(target=_warm_up_workers, args=(grid, client_config, settings), name="warm-up", daemon=True).start()


def _warm_up_workers(grid: Grid, client_config: dict[str, Scalar], settings: ServerSettings) -> None:
    from flwr.common import GetPropertiesIns
    from flwr.server.compat.grid_client_proxy import GridClientProxy

    from fedmnist.client.flower_client import WARM_UP

    instruction = GetPropertiesIns({**client_config, WARM_UP: True})
    count = max(1, math.ceil(settings.clients * settings.fraction_fit))
    deadline = time.monotonic() + WARM_UP_WAIT_SECONDS
    nodes = grid.get_node_ids()
    while not nodes and time.monotonic() < deadline:  # Flower registers them beside the ServerApp's start.
        time.sleep(0.05)
        nodes = grid.get_node_ids()
    for node_id in sorted(nodes)[:count]:
        proxy = GridClientProxy(node_id, grid, grid.run.run_id)
        threading.Thread(
            target=_warm_up, args=(proxy, instruction, settings.round_timeout), name="warm-up", daemon=True
        ).start()


def _warm_up(proxy: ClientProxy, instruction: GetPropertiesIns, timeout: float | None) -> None:
    try:
        proxy.get_properties(instruction, timeout=timeout, group_id=0)
    except Exception as error:  # noqa: BLE001  Round 1 meets the same problem and reports it.
        log.debug("a worker's warm-up failed: %s", error)
