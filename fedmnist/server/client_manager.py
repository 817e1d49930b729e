"""A client manager that says what it is waiting for, gives up in time, and samples by the run's seed.

Flower samples a round's clients with Python's module-level ``random`` over client
ids that are new every run, so the same seed trains other cohorts. Given a
``seed``, ``WaitingClientManager.sample`` orders the clients by partition id (each
client tells its own, once, when asked: ``PartitionClient.get_properties``) and
draws from a generator seeded by the run's seed, the round and the stage.
Sampling every client (``--fraction-fit 1``, the default) asks nothing and draws nothing.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from flwr.common import GetPropertiesIns
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.criterion import Criterion

from fedmnist.common.errors import UserError
from fedmnist.results.records import UNKNOWN_PARTITION, partition_of

log = logging.getLogger(__name__)
ASK_TIMEOUT_SECONDS = 60.0  # For a client to say its partition id.
ASKED_AT_ONCE = 16


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
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.timeout = timeout
        self.expected = expected  # Clients of the run, waited for before round 1.
        self.minimum = expected if minimum is None else minimum  # Enough to start without the others.
        self.report_every = report_every
        self.on_change = on_change  # Called with the number connected after each arrival or departure.
        self._all_arrived = False
        self.seed = seed  # Sample by partition id from this seed; None: as Flower does.
        self._draw = (0, "fit")  # The round and stage the next sample is for (``sampling_for``).
        self._partitions: dict[str, int] = {}  # Each client's own partition id, by Flower's client id.

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

    def sampling_for(self, server_round: int, stage: str) -> None:
        """The next ``sample`` draws the clients of ``stage`` (fit or evaluate) of ``server_round``."""
        self._draw = (server_round, stage)

    def sample(
        self, num_clients: int, min_num_clients: int | None = None, criterion: Criterion | None = None
    ) -> list[ClientProxy]:
        """``num_clients`` clients: drawn by partition id from the run's seed, the round and the stage."""
        if self.seed is None:
            return super().sample(num_clients, min_num_clients, criterion)
        self.wait_for(num_clients if min_num_clients is None else min_num_clients)
        with self._cv:  # A copy: Flower's gRPC threads register and unregister clients meanwhile.
            connected = dict(self.clients)
        available = [cid for cid, proxy in connected.items() if criterion is None or criterion.select(proxy)]
        if num_clients > len(available):
            log.info("sampling failed: %d clients available, %d requested", len(available), num_clients)
            return []
        if num_clients < len(available):
            self._learn_partitions(available)
            available.sort(key=lambda cid: (self._partitions.get(cid, UNKNOWN_PARTITION), cid))
            server_round, stage = self._draw
            # A string seed is hashed with SHA-512: the same draw in every process and on every machine.
            available = random.Random(f"{self.seed}/{server_round}/{stage}").sample(available, num_clients)
        still = [self.clients.get(cid) for cid in available]  # Without those gone meanwhile.
        return [proxy for proxy in still if proxy is not None]

    def _learn_partitions(self, cids: list[str]) -> None:
        """Ask each client not asked before for its partition id (a few at a time); one that cannot say has none."""
        unknown = [cid for cid in cids if cid not in self._partitions]
        if not unknown:
            return
        with ThreadPoolExecutor(max_workers=min(ASKED_AT_ONCE, len(unknown))) as pool:
            for cid, partition in zip(unknown, pool.map(self._ask_partition, unknown), strict=True):
                self._partitions[cid] = partition

    def _ask_partition(self, cid: str) -> int:
        proxy = self.clients.get(cid)
        if proxy is None:  # Gone meanwhile.
            return UNKNOWN_PARTITION
        try:
            res = proxy.get_properties(GetPropertiesIns({}), timeout=ASK_TIMEOUT_SECONDS, group_id=None)
        except Exception as error:  # noqa: BLE001  A client that cannot answer is sampled all the same.
            log.debug("client %s did not say its partition: %s", cid, error)
            return UNKNOWN_PARTITION
        return partition_of(res.properties)

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
