"""A client manager that says what it is waiting for, and gives up in time."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from fedmnist.common.errors import UserError

log = logging.getLogger(__name__)


class ClientsDidNotConnect(UserError):
    """Fewer clients than required connected before the timeout."""


class WaitingClientManager(SimpleClientManager):
    """Flower's SimpleClientManager with a bounded, talkative ``wait_for``.

    Flower waits up to a day for clients, silently. This manager logs how many
    clients are connected every ``report_every`` seconds and raises
    ``ClientsDidNotConnect`` after ``timeout`` seconds without enough of them.
    """

    def __init__(
        self,
        *,
        timeout: float,
        expected: int = 0,
        minimum: int | None = None,
        report_every: float = 10.0,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__()
        self.timeout = timeout
        self.expected = expected  # Clients of the run, waited for before round 1.
        self.minimum = expected if minimum is None else minimum  # Enough to start without the others.
        self.report_every = report_every
        self.on_change = on_change  # Called with the number connected after each arrival or departure.
        self._all_arrived = False

    def register(self, client: ClientProxy) -> bool:
        registered = super().register(client)
        if registered and self.on_change is not None:
            self.on_change(len(self))
        return registered

    def unregister(self, client: ClientProxy) -> None:
        known = client.cid in self.clients
        super().unregister(client)
        if known and self.on_change is not None:
            self.on_change(len(self))

    def num_available(self) -> int:
        # Strategies size a round's sample from this count: until every expected client
        # has arrived once, wait for them, so round 1 does not start with the early ones.
        if not self._all_arrived:
            self.wait_for(self.minimum)
        return super().num_available()

    def wait_for(self, num_clients: int, timeout: int = 0) -> bool:
        # Flower passes its one-day default; our own timeout applies instead. The first
        # wait is for every expected client, so round 1 trains on all of them; if some
        # never come, the run starts with those present once the strategy's minimum
        # (--min-clients) is there. Later rounds go on with that minimum (a client may die).
        needed = num_clients
        if not self._all_arrived:
            num_clients = max(num_clients, self.expected)
        deadline = time.monotonic() + self.timeout
        while len(self) < num_clients:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if not self._all_arrived and len(self) >= needed:
                    log.warning(
                        "%d of %d clients connected within %g s; starting without the %d missing "
                        "(at least %d are needed, --min-clients)",
                        len(self),
                        num_clients,
                        self.timeout,
                        num_clients - len(self),
                        needed,
                    )
                    break
                raise ClientsDidNotConnect(
                    f"only {len(self)} of {num_clients} clients connected within {self.timeout:g} s "
                    f"({needed} needed; start them with client.py, or raise --client-timeout)"
                )
            log.info("waiting for clients: %d of %d connected", len(self), num_clients)
            # Flower annotates timeout as int; it hands it to threading.Condition.wait_for, which takes seconds.
            super().wait_for(num_clients, timeout=min(self.report_every, remaining))  # type: ignore[arg-type]
        self._all_arrived = True
        return True
