"""WaitingClientManager: waiting with a timeout, and reporting arrivals and departures."""

from __future__ import annotations

import pytest

from conftest import IdleClient
from fedmnist.client_manager import ClientsDidNotConnect, WaitingClientManager


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
