"""WaitingClientManager: waiting with a timeout, and reporting arrivals and departures."""

from __future__ import annotations

import pytest
from flwr.common import Code, GetPropertiesIns, GetPropertiesRes, Scalar, Status
from flwr.server.client_proxy import ClientProxy
from flwr.server.criterion import Criterion

from conftest import IdleClient
from fedmnist.server.client_manager import ClientsDidNotConnect, WaitingClientManager


def test_every_arrival_and_departure_reports_the_count_once() -> None:
    counts: list[int] = []
    manager = WaitingClientManager(timeout=1, expected=2, on_change=counts.append)
    first, second = IdleClient("a"), IdleClient("b")
    assert manager.register(first) and manager.register(second)
    assert not manager.register(first)  # Already there: Flower refuses it, nothing to report.
    manager.unregister(first)
    manager.unregister(first)  # Gone already.
    assert counts == [1, 2, 1]


def test_too_few_clients_time_out_with_a_clear_error() -> None:
    manager = WaitingClientManager(timeout=0.2, expected=2, report_every=0.1)
    manager.register(IdleClient("a"))
    with pytest.raises(ClientsDidNotConnect, match="only 1 of 2 clients connected within 0.2 s"):
        manager.wait_for(2)


def test_round_one_starts_with_the_clients_present_when_enough_came() -> None:
    # 3 expected, 2 needed (--min-clients 2), 2 came: after the timeout the run starts with them.
    manager = WaitingClientManager(timeout=0.2, expected=3, minimum=2, report_every=0.1)
    manager.register(IdleClient("a"))
    manager.register(IdleClient("b"))
    assert manager.num_available() == 2
    manager.register(IdleClient("c"))
    assert manager.num_available() == 3  # No second wait once the first round could start.


def test_fewer_than_the_minimum_still_time_out() -> None:
    manager = WaitingClientManager(timeout=0.2, expected=3, minimum=2, report_every=0.1)
    manager.register(IdleClient("a"))
    with pytest.raises(ClientsDidNotConnect, match="only 1 of 3 clients connected within 0.2 s \\(2 needed"):
        manager.num_available()


class PartitionProxy(ClientProxy):
    """A connected client that says its partition id when asked, as ``PartitionClient`` does; nothing else."""

    get_parameters = fit = evaluate = reconnect = IdleClient._refuse

    def __init__(self, cid: str, partition_id: int | None) -> None:
        super().__init__(cid)
        self.partition_id, self.asked = partition_id, 0

    def get_properties(self, ins: GetPropertiesIns, timeout: float | None, group_id: int | None) -> GetPropertiesRes:
        self.asked += 1
        said: dict[str, Scalar] = {} if self.partition_id is None else {"partition_id": self.partition_id}
        return GetPropertiesRes(Status(Code.OK, ""), said)


def cohorts(seed: int, clients: list[tuple[str, int]], rounds: int = 4, num_clients: int = 3) -> list[list[int]]:
    """The partitions sampled each round by a manager with ``seed``, its ``(client id, partition)`` registered in order."""
    manager = WaitingClientManager(timeout=1, expected=len(clients), seed=seed)
    proxies = {cid: PartitionProxy(cid, partition) for cid, partition in clients}
    for proxy in proxies.values():
        manager.register(proxy)
    drawn = []
    for server_round in range(1, rounds + 1):
        manager.sampling_for(server_round, "fit")
        drawn.append(sorted(int(proxies[proxy.cid].partition_id or 0) for proxy in manager.sample(num_clients)))
    return drawn


def test_the_same_seed_samples_the_same_partitions_whatever_the_client_ids() -> None:
    # Flower's client ids are new every run, and clients connect in any order.
    first = cohorts(7, [(f"run1-{p}", p) for p in range(10)])
    again = cohorts(7, [(f"{p}-run2", p) for p in reversed(range(10))])
    assert first == again
    assert len({tuple(cohort) for cohort in first}) > 1  # Each round draws afresh.
    assert cohorts(8, [(f"run1-{p}", p) for p in range(10)]) != first  # Another seed, other cohorts.


def test_each_client_is_asked_its_partition_once_and_sampling_everyone_asks_nothing() -> None:
    manager = WaitingClientManager(timeout=1, expected=4, seed=7)
    clients = [PartitionProxy(f"c{p}", p) for p in range(3)] + [PartitionProxy("stranger", None)]
    for client in clients:
        manager.register(client)
    assert len(manager.sample(4)) == 4 and [c.asked for c in clients] == [0, 0, 0, 0]
    for server_round in (1, 2):
        manager.sampling_for(server_round, "evaluate")
        assert len(manager.sample(2)) == 2
    assert [c.asked for c in clients] == [1, 1, 1, 1]


def test_without_a_seed_it_samples_as_flower_does() -> None:
    manager = WaitingClientManager(timeout=1, expected=3)
    clients = [PartitionProxy(f"c{p}", p) for p in range(3)]
    for client in clients:
        manager.register(client)
    assert len(manager.sample(2)) == 2 and [c.asked for c in clients] == [0, 0, 0]


def test_a_client_that_connects_while_a_round_samples_does_not_break_the_sampling() -> None:
    """Flower's gRPC threads register clients while the server samples; sampling reads a copy.

    The criterion, called for each client as sampling goes, registers another one, as a connecting
    client's thread would; iterating the live dictionary raised "dictionary changed size during
    iteration" and ended the run (seen once in a full suite).
    """
    manager = WaitingClientManager(timeout=1, expected=3, seed=7)
    for p in range(3):
        manager.register(PartitionProxy(f"c{p}", p))

    class ArrivalMeanwhile(Criterion):
        def select(self, client: ClientProxy) -> bool:
            manager.register(PartitionProxy(f"late-{client.cid}", None))
            return True

    sampled = manager.sample(3, criterion=ArrivalMeanwhile())
    assert sorted(c.cid for c in sampled) == ["c0", "c1", "c2"] and len(manager) == 6
