"""The slow link: what passes through arrives intact, in order, never before its delay and its bandwidth allow."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from fedmnist.common.slow_link import SlowLink, running

pytestmark = pytest.mark.slow  # Seconds of real delay and pacing.


def echo_server() -> tuple[socket.socket, int]:
    """A loopback server that sends back everything it receives, one connection at a time."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        with listener:
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                with connection:
                    while data := connection.recv(65536):
                        connection.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return listener, int(listener.getsockname()[1])


def round_trip(port: int, payload: bytes) -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", port)) as connection:
        started = time.monotonic()
        threading.Thread(target=connection.sendall, args=(payload,), daemon=True).start()
        received = b""
        while len(received) < len(payload):
            received += connection.recv(65536)
        return received, time.monotonic() - started


def test_a_round_trip_takes_at_least_twice_the_delay_and_the_bytes_arrive_in_order() -> None:
    listener, port = echo_server()
    payload = bytes(range(256)) * 400  # 102,400 bytes.
    with running(SlowLink(("127.0.0.1", port), delay=0.1)) as relayed:
        received, took = round_trip(relayed, payload)
    listener.close()
    assert received == payload and took >= 0.2


def test_the_bandwidth_cap_holds_each_direction() -> None:
    """200 KB at 1 Mbit/s (125,000 bytes/s) take at least 1.6 s to get there; back again overlaps, but not less."""
    listener, port = echo_server()
    payload = b"x" * 200_000
    with running(SlowLink(("127.0.0.1", port), rate=125_000)) as relayed:
        received, took = round_trip(relayed, payload)
    listener.close()
    assert received == payload and took >= 200_000 / 125_000


def test_a_lost_server_is_retried_soon_at_first_then_less_and_less_often() -> None:
    from fedmnist.client.classic import MAX_RETRY_SECONDS, RETRY_SECONDS, retry_pause

    pauses = [retry_pause(outage) for outage in (0, 5, 9.9, 10, 20, 30, 60, 600)]
    assert pauses[:3] == [RETRY_SECONDS] * 3  # A restarting server is back within seconds: no backoff yet.
    assert pauses[3:] == sorted(pauses[3:]) and pauses[3] == 2 * RETRY_SECONDS and pauses[-1] == MAX_RETRY_SECONDS
