"""WaitingClientManager: waiting with a timeout, and reporting arrivals and departures."""

from __future__ import annotations

import pytest

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
