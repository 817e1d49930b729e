"""A slow link in user space: a TCP relay that delays and rate-limits what passes through it.

This machine's kernel has no ``netem``, so the benchmarks put this between a
client and the server instead: ``SlowLink(("127.0.0.1", 8000), delay=0.05,
rate=125_000)`` accepts connections on a port of its own and relays each of
them to the server, each direction arriving ``delay`` seconds late (one-way
latency) and at most ``rate`` bytes a second (1 Mbit/s is 125,000). Data is
paced in pieces of ``PIECE`` bytes, as a link sends packets, and never
arrives early or out of order. ``cut`` pulls the cable (every connection is
reset, new ones refused) until ``restore``.

``python -m fedmnist.common.slow_link --listen 9000 --to 127.0.0.1:8000 --delay-ms 50 --mbit 1``
runs one from the command line until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

PIECE = 16_384  # Bytes paced at a time.


class SlowLink:
    """Relays connections to ``target`` with ``delay`` seconds of one-way latency and ``rate`` bytes/s each way."""

    def __init__(self, target: tuple[str, int], *, delay: float = 0.0, rate: float | None = None) -> None:
        self.target, self.delay, self.rate = target, delay, rate
        self.up = True  # False while the cable is out (``cut``): connections are reset and refused.
        self._connections: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def cut(self) -> None:
        """Pull the cable: reset every relayed connection and refuse new ones until ``restore``."""
        self._call(self._cut)

    def restore(self) -> None:
        """Put the cable back: new connections are relayed again."""
        self._call(lambda: setattr(self, "up", True))

    def _call(self, action: Callable[[], object]) -> None:
        assert self._loop is not None, "the link is not running"
        asyncio.run_coroutine_threadsafe(_run(action), self._loop).result(timeout=5)

    def _cut(self) -> None:
        self.up = False
        for writer in self._connections:
            writer.transport.abort()  # A reset, as a peer that lost its route sees it eventually.

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        """Start relaying connections made to ``host:port`` (0: a free port)."""
        self._loop = asyncio.get_running_loop()
        return await asyncio.start_server(self._relay, host, port)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if not self.up:
            client_writer.transport.abort()
            return
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        self._connections |= {client_writer, server_writer}
        try:
            await asyncio.gather(
                self._pipe(client_reader, server_writer),
                self._pipe(server_reader, client_writer),
                return_exceptions=True,
            )
        finally:
            self._connections -= {client_writer, server_writer}

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction: read at once, deliver each piece when the link would have."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._deliver(queue, writer))
        line_free = 0.0  # When the link finishes sending what it has taken so far.
        try:
            while data := await reader.read(PIECE):
                now = time.monotonic()
                line_free = max(now, line_free) + (len(data) / self.rate if self.rate else 0.0)
                await queue.put((line_free + self.delay, data))
        finally:
            await queue.put((0.0, b""))  # The end: close once everything before it is delivered.
            with suppress(Exception):
                await sender

    @staticmethod
    async def _deliver(queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


@contextmanager
def running(link: SlowLink, port: int = 0) -> Iterator[int]:
    """Run ``link`` on a thread of its own while the block runs; yields the port it listens on."""
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(link.serve(port=port))
    thread = threading.Thread(target=loop.run_forever, name="slow-link", daemon=True)
    thread.start()
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        asyncio.run_coroutine_threadsafe(_shut(server), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


async def _run(action: Callable[[], object]) -> None:
    action()


async def _shut(server: asyncio.Server) -> None:
    """Stop accepting, and end the connections still relayed."""
    server.close()
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--listen", type=int, required=True, help="port to accept connections on (127.0.0.1)")
    parser.add_argument("--to", required=True, help="HOST:PORT to relay them to")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay, each direction")
    parser.add_argument("--mbit", type=float, default=None, help="bandwidth cap, each direction (Mbit/s)")
    args = parser.parse_args()
    host, _, port = args.to.rpartition(":")
    link = SlowLink((host, int(port)), delay=args.delay_ms / 1000, rate=args.mbit * 125_000 if args.mbit else None)
    with suppress(KeyboardInterrupt), running(link, args.listen):
        threading.Event().wait()


if __name__ == "__main__":
    main()
