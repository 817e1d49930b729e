"""A ServerApp's federation step: Flower's legacy ``Server`` driven through the run's Grid.

The Grid is the ServerApp's link to the clients on the Simulation or the Deployment Runtime;
Flower's ``start_grid`` registers each SuperNode with the server's client manager as it appears,
so waiting for clients, sampling and timeouts behave as on the classic pair. With ``--secagg``
Flower's SecAgg+ workflow drives the same strategy and client manager instead
(``fedmnist.privacy.secagg``). On the simulation, whose workers stay up for the whole run, the
workers are warmed up first (``warm_up_workers``); on both, replies are collected soon after they
are in (``prompt``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flwr.serverapp import Grid

from fedmnist.server.federation import Federation
from fedmnist.settings.server_settings import ServerSettings

if TYPE_CHECKING:
    from flwr.app import Context, Message, RecordDict
    from flwr.common import GetPropertiesIns, Scalar
    from flwr.server import Server, ServerConfig
    from flwr.server.client_proxy import ClientProxy
    from flwr.server.history import History
    from flwr.supercore.run import Run

log = logging.getLogger(__name__)
WARM_UP_WAIT_SECONDS = 30.0  # How long the warm-up waits for Flower to register the virtual clients.
# How often PromptGrid asks the SuperLink for replies: each ask is one small HTTP request on a kept connection.
REPLY_POLL_SECONDS = 0.2
# How often the simulation's in-memory Grid looks for replies: each look is a dictionary lookup under a lock.
IN_MEMORY_POLL_SECONDS = 0.01


class GridFederation(Federation):
    """The rounds through ``grid``, as the ServerApp of ``context`` runs them (SecAgg+ with ``--secagg``)."""

    def __init__(self, grid: Grid, context: Context, settings: ServerSettings) -> None:
        self.grid, self.context, self.settings = grid, context, settings

    def run(self, server: Server, config: ServerConfig, client_config: dict[str, Scalar]) -> History | None:
        settings = self.settings
        grid = prompt(self.grid, settings.runtime)
        if settings.runtime == "simulation":  # The Deployment Runtime starts a process per message: none stays warm.
            warm_up_workers(grid, client_config, settings)
        if settings.secagg:
            from fedmnist.privacy.secagg import secagg_federation

            federate = secagg_federation(
                grid,
                self.context,
                settings.secagg_shares,
                settings.secagg_threshold,
                settings.round_timeout,
                equal_weights=settings.dp_noise is not None,
            )
            return federate(server, config)
        from flwr.server.compat import start_grid

        return start_grid(grid=grid, server=server, config=config)


def prompt(grid: Grid, runtime: str) -> Grid:
    """``grid``, made to collect replies soon after they are in on ``runtime``.

    The Deployment Runtime's HttpGrid waits 3 s between looks: wrapped in
    ``PromptGrid``. The simulation's InMemoryGrid sleeps its ``pull_interval``
    (0.1 s) between looks at its in-memory state, however soon a reply is in:
    each exchange (a round's fit, then its evaluation) waited 0.05 s on
    average, about 1 s in a 10-round run; it looks every
    ``IN_MEMORY_POLL_SECONDS`` instead (a look costs microseconds).
    """
    if runtime == "deployment":
        return PromptGrid(grid)
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    if isinstance(grid, InMemoryGrid):  # Its pull_interval: tests/test_flower_internals.py pins it.
        grid.pull_interval = IN_MEMORY_POLL_SECONDS
    return grid


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


class PromptGrid(Grid):
    """``grid`` (Flower's HttpGrid) collecting replies every ``REPLY_POLL_SECONDS`` instead of every 3 s.

    Flower's HttpGrid looks for the replies to a message every 3 s, however
    soon they arrive; a SecAgg+ round is five exchanges (four for the fit,
    one for the evaluation), so a round waited 1.5 s per exchange on average
    for replies that were already in. Everything else is ``grid``'s own.
    """

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages``, then pull their replies until all are in or ``timeout`` seconds have passed."""
        waiting = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting and (deadline is None or time.monotonic() < deadline):
            pulled = list(self.pull_messages(waiting))
            replies.extend(pulled)
            waiting.difference_update(reply.metadata.reply_to_message_id for reply in pulled)
            if waiting:
                time.sleep(REPLY_POLL_SECONDS)
        return replies
