"""WebSocket participants: their places in the run, and each one's conversation from join to end.

``Federation`` knows the Flower server and the partition ids set aside for
participants (``./run.sh --ws-clients K`` keeps the last K of ``--clients``
for them). A ``Participant`` takes one of those places when it joins, opens a
``FlowerLink`` to the server, and from then on relays: every instruction the
server sends becomes a ``fit`` or ``evaluate`` message, and the participant's
answer goes back to the server as that client's result. When the socket
closes, the link closes: a round in progress counts one failure, and later
rounds go on without it.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from fedmnist.common.errors import UserError
from fedmnist.dashboard.flower_link import FlowerLink, Instruction
from fedmnist.dashboard.protocol import (
    MESSAGE_OVERHEAD,
    BadMessage,
    DataMessage,
    EndMessage,
    EvaluateMessage,
    EvaluateResultMessage,
    FitMessage,
    FitResultMessage,
    JoinMessage,
    ParticipantError,
    PongMessage,
    WelcomeMessage,
    arrays,
    dense_layer_sizes,
    message_cap,
    parse_participant_message,
    rows,
    tensors,
)
from fedmnist.data.sources import MnistData, client_data, load_mnist
from fedmnist.privacy.dp import clip_update
from fedmnist.settings import defaults
from fedmnist.settings.client_config import missing_keys

RETRY_SECONDS = 0.5  # Pause between attempts to reach a Flower server that is not listening yet.


class Federation:
    """The Flower server participants join, and the partition ids they may take (one each)."""

    def __init__(
        self,
        *,
        flower_server: str = defaults.CLIENT_SERVER_ADDRESS,
        partitions: Sequence[int] = (),
        root_certificate: bytes | None = None,
        data_home: str | None = None,
        answer_timeout: float = defaults.ROUND_TIMEOUT,
        connect_timeout: float = defaults.CONNECT_TIMEOUT,
        join_token: str | None = None,
    ) -> None:
        self.flower_server = flower_server
        self.join_token = join_token  # What a participant must show (/ws?token=...); None: anyone may join.
        self.root_certificate = root_certificate
        self.data_home = data_home
        self.answer_timeout = answer_timeout
        self.connect_timeout = connect_timeout
        self._places = sorted(set(partitions))
        self._taken: set[int] = set()
        self._data: dict[str, MnistData] = {}
        self._data_lock = threading.Lock()

    def admits(self, token: str | None) -> bool:
        """Whether a connection that showed ``token`` may take part (compared in constant time)."""
        if self.join_token is None:
            return True
        return token is not None and hmac.compare_digest(token.encode(), self.join_token.encode())

    def take_place(self, wanted: int | None) -> int:
        """A free partition id (``wanted`` if given and free); BadMessage when there is none."""
        if not self._places:
            raise BadMessage(
                "this dashboard keeps no places for WebSocket clients: start the run with "
                "./run.sh --ws-clients K (or the dashboard with --ws-partitions)"
            )
        free = [place for place in self._places if place not in self._taken]
        if wanted is not None and wanted not in free:
            raise BadMessage(f"partition {wanted} is not free for WebSocket clients; free: {free or 'none'}")
        if not free:
            raise BadMessage(f"all {len(self._places)} WebSocket places are taken (partitions {self._places})")
        place = free[0] if wanted is None else wanted
        self._taken.add(place)
        return place

    def free_place(self, place: int) -> None:
        self._taken.discard(place)

    def partition(self, partition_id: int, run_config: dict[str, Any]) -> DataMessage:
        """Partition ``partition_id`` of the run whose fit ``run_config`` arrived, cut as ``client.py`` cuts it."""
        dataset, num_partitions = str(run_config["dataset"]), int(run_config["num-partitions"])
        seed, scheme = int(run_config["seed"]), str(run_config["partition"])
        with self._data_lock:  # Two participants joining at once load the data once.
            if dataset not in self._data:
                self._data[dataset] = load_mnist(dataset, self.data_home)
        share = client_data(self._data[dataset], partition_id, num_partitions, seed, partition=scheme)
        return DataMessage(
            partition=partition_id,
            num_partitions=num_partitions,
            scheme=scheme,
            dataset=dataset,
            train=rows(share.x_train, share.y_train),
            validation=rows(share.x_val, share.y_val),
        )


@dataclass
class _Pending:
    """The instruction a participant has been sent and not yet answered."""

    kind: str
    round: int
    shapes: list[tuple[int, ...]]
    answer: asyncio.Future[tuple[FitResultMessage | EvaluateResultMessage, list[np.ndarray]]]


class _LinkLost(Exception):
    """The Flower server could not be reached, or the connection to it broke."""


class Participant:
    """One WebSocket participant: its place, its link to the Flower server and its pending instruction.

    ``handle`` takes each text message from the socket; a background task relays
    the server's instructions. ``send`` and ``close`` write to the socket.
    """

    def __init__(
        self,
        federation: Federation,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
        name: str = "participant",
    ) -> None:
        self.federation = federation
        self.message_cap = MESSAGE_OVERHEAD  # Grows to fit the model's weights once they are known.
        self.place: int | None = None
        self.name = name
        self._send_json, self._close = send, close
        self._send_lock = asyncio.Lock()  # The relay and the replies share the socket.
        self._pending: _Pending | None = None
        self._instructions: asyncio.Queue[Instruction | None | _LinkLost] = asyncio.Queue()
        self._link: FlowerLink | None = None
        self._left = threading.Event()
        self._relay: asyncio.Task[None] | None = None
        self._data_sent = False

    async def handle(self, text: str) -> None:
        """Act on one message; a bad one is answered with an ``error`` and changes nothing."""
        try:
            message = parse_participant_message(text)
            if isinstance(message, JoinMessage):
                await self._join(message)
            elif isinstance(message, FitResultMessage | EvaluateResultMessage):
                self._take_answer(message)
            else:
                await self.send(PongMessage())
        except BadMessage as error:
            await self.send(ParticipantError(error=str(error)))

    async def leave(self) -> None:
        """The socket closed: give the place back and leave the federation."""
        self._left.set()
        if self._relay is not None:
            self._relay.cancel()
        if self._link is not None:
            self._link.close()
        if self.place is not None:
            self.federation.free_place(self.place)
            print(f"{self.name} (partition {self.place}) left", flush=True)
            self.place = None

    async def send(self, message: BaseModel) -> None:
        async with self._send_lock:
            await self._send_json(message.model_dump(mode="json"))

    async def _join(self, message: JoinMessage) -> None:
        if self.place is not None:
            raise BadMessage(f"already joined as partition {self.place}")
        self.place = self.federation.take_place(message.partition)
        self.name = message.name or self.name
        print(f"{self.name} joined as partition {self.place}", flush=True)
        await self.send(WelcomeMessage(partition=self.place, flower_server=self.federation.flower_server))
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=self._read_instructions, args=(loop,), daemon=True, name=f"flower-link-{self.place}"
        ).start()
        self._relay = asyncio.create_task(self._relay_instructions())

    def _take_answer(self, message: FitResultMessage | EvaluateResultMessage) -> None:
        pending = self._pending
        kind = "fit" if isinstance(message, FitResultMessage) else "evaluate"
        if pending is None or pending.kind != kind or pending.round != message.round:
            waiting = f"{pending.kind} of round {pending.round}" if pending else "nothing"
            raise BadMessage(f"{message.type} for round {message.round} was not asked for (waiting for {waiting})")
        weights = arrays(message.weights, pending.shapes) if isinstance(message, FitResultMessage) else []
        self._pending = None  # One answer per instruction.
        pending.answer.set_result((message, weights))

    def _read_instructions(self, loop: asyncio.AbstractEventLoop) -> None:
        """In a thread: connect (retrying while the server is not up yet) and queue every instruction."""

        def post(item: Instruction | None | _LinkLost) -> None:
            loop.call_soon_threadsafe(self._instructions.put_nowait, item)

        deadline = time.monotonic() + self.federation.connect_timeout
        heard = False
        while not self._left.is_set():
            self._link = FlowerLink(self.federation.flower_server, self.federation.root_certificate)
            if self._left.is_set():  # Left while we connected.
                self._link.close()
                return
            try:
                while (instruction := self._link.next_instruction()) is not None:
                    heard = True
                    post(instruction)
                post(None)
                return
            except grpc.RpcError as error:
                if self._left.is_set():
                    return
                code = error.code()
                if heard or code != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    server = self.federation.flower_server
                    post(
                        _LinkLost(
                            f"lost the Flower server at {server} ({code.name})"
                            if heard
                            else f"could not reach the Flower server at {server} within "
                            f"{self.federation.connect_timeout:g} s ({code.name}); is its run going?"
                        )
                    )
                    return
            self._link.close()
            time.sleep(RETRY_SECONDS)

    async def _relay_instructions(self) -> None:
        while True:
            instruction = await self._instructions.get()
            if instruction is None:
                return await self._end("the server finished the run", finished=True)
            if isinstance(instruction, _LinkLost):
                return await self._end(str(instruction))
            if not await self._carry_out(instruction):
                return

    async def _carry_out(self, instruction: Instruction) -> bool:
        """Relay one instruction and its answer; False when this participant cannot take part."""
        assert self._link is not None and self.place is not None  # Set before any instruction arrives.
        shapes = [tuple(int(size) for size in array.shape) for array in instruction.weights]
        problem = await self._prepare(instruction, shapes)
        if problem:
            self._link.send_failure(instruction.kind, f"WebSocket participant refused: {problem}")
            await self._end(problem)
            return False
        round_number = int(instruction.config["server-round"])
        future = asyncio.get_running_loop().create_future()
        self._pending = _Pending(instruction.kind, round_number, shapes, future)
        self.message_cap = message_cap(sum(int(np.prod(shape)) for shape in shapes))
        message_type = FitMessage if instruction.kind == "fit" else EvaluateMessage
        started = time.perf_counter()
        await self.send(
            message_type(round=round_number, weights=tensors(instruction.weights), config=dict(instruction.config))
        )
        try:
            answer, weights = await asyncio.wait_for(future, self.federation.answer_timeout)
        except TimeoutError:
            self._pending = None
            reason = (
                f"no {instruction.kind}_result for round {round_number} within {self.federation.answer_timeout:g} s"
            )
            self._link.send_failure(instruction.kind, reason)
            await self.send(ParticipantError(error=f"{reason}; the round counts it as a failure"))
            return True
        metrics = {
            **answer.metrics,
            "partition_id": self.place,
            defaults.PARTICIPANT_KEY: self.name[: defaults.PARTICIPANT_NAME_CHARS],
            f"{instruction.kind}_seconds": time.perf_counter() - started,
        }
        if isinstance(answer, FitResultMessage):
            # Client-side DP: the seat clips for its participant, as client.py clips for itself.
            self._link.send_fit(
                clip_update(weights, instruction.weights, instruction.config), answer.num_examples, metrics
            )
        else:  # The loss is a metric too, as client.py reports it.
            self._link.send_evaluate(answer.loss, answer.num_examples, {**metrics, "loss": answer.loss})
        return True

    async def _prepare(self, instruction: Instruction, shapes: list[tuple[int, ...]]) -> str:
        """Check the config (every time) and the model, and send the partition before the first; the problem, or ""."""
        # The participant trains as the config says, so the seat refuses one that lacks a setting.
        problem = missing_keys(instruction.config)
        if problem or self._data_sent:
            return problem
        if dense_layer_sizes(shapes) is None:
            model = str(instruction.config["model"])
            return (
                f"this run's model ({model}) is not a dense network; WebSocket clients train dense models: "
                f"start the run with --model {' or --model '.join(defaults.DENSE_MODELS)}"
            )
        assert self.place is not None, "a participant is given its place before the server's first instruction"
        try:
            data = await run_in_threadpool(self.federation.partition, self.place, dict(instruction.config))
        except UserError as error:
            return str(error)
        await self.send(data)
        self._data_sent = True
        return ""

    async def _end(self, reason: str, finished: bool = False) -> None:
        await self.send(EndMessage(reason=reason, finished=finished))
        await self._close()
