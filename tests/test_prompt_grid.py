"""PromptGrid: the Deployment Runtime's replies collected as they arrive, with Flower's timeout kept."""

from __future__ import annotations

import time
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any, cast

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedmnist.runtimes.grid import IN_MEMORY_POLL_SECONDS, REPLY_POLL_SECONDS, PromptGrid, prompt


def message(node: int) -> Message:
    """What PromptGrid sees of a message: Flower's own need a run (a ServerApp's process) to be made."""
    return cast(Message, SimpleNamespace(metadata=SimpleNamespace(dst_node_id=node)))


def reply(to: str) -> Message:
    return cast(Message, SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=to)))


class SlowNodes(Grid):
    """A grid whose nodes reply to each message ``delays[node]`` seconds after it was pushed (None: never)."""

    def __init__(self, delays: dict[int, float | None]) -> None:
        self.delays = delays
        self.pushed: dict[str, tuple[Any, float]] = {}
        self.pulls = 0

    def set_run(self, run: Run) -> None:
        raise NotImplementedError

    @property
    def run(self) -> Run:
        raise NotImplementedError

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return message(dst_node_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.delays)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for sent in messages:
            ids.append(f"m{len(self.pushed)}")
            self.pushed[ids[-1]] = (sent, time.monotonic())
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self.pulls += 1
        replies = []
        for message_id in message_ids:
            sent, pushed = self.pushed[message_id]
            delay = self.delays[sent.metadata.dst_node_id]
            if delay is not None and time.monotonic() - pushed >= delay:
                replies.append(reply(message_id))
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        raise AssertionError("PromptGrid sends and receives itself")


def messages(grid: Grid, nodes: Iterable[int]) -> list[Message]:
    """One train message to each of ``nodes``, made by ``grid``."""
    return [grid.create_message(RecordDict(), "train", node, "1") for node in nodes]


def test_replies_are_collected_as_they_arrive_not_three_seconds_apart() -> None:
    nodes = SlowNodes({1: 0.0, 2: 0.3, 3: 0.5})
    grid = PromptGrid(nodes)
    started = time.monotonic()
    replies = list(grid.send_and_receive(messages(grid, [1, 2, 3]), timeout=30))
    took = time.monotonic() - started
    assert sorted(reply.metadata.reply_to_message_id for reply in replies) == ["m0", "m1", "m2"]
    assert 0.5 <= took < 0.5 + 5 * REPLY_POLL_SECONDS  # Flower's HttpGrid: 3 s here.
    assert nodes.pulls >= 3  # Each reply once, pulled as it came.


def test_a_node_that_never_replies_is_left_at_the_timeout_with_the_others_replies() -> None:
    nodes = SlowNodes({1: 0.0, 2: None})
    grid = PromptGrid(nodes)
    started = time.monotonic()
    replies = list(grid.send_and_receive(messages(grid, [1, 2]), timeout=0.6))
    assert 0.6 <= time.monotonic() - started < 1.5
    assert [reply.metadata.reply_to_message_id for reply in replies] == ["m0"]


def test_everything_but_sending_and_receiving_is_the_wrapped_grids() -> None:
    nodes = SlowNodes({4: 0.0, 7: 0.0})
    grid = PromptGrid(nodes)
    assert list(grid.get_node_ids()) == [4, 7]
    sent = messages(grid, [7])
    assert sent[0].metadata.dst_node_id == 7 and list(grid.push_messages(sent)) == ["m0"]
    assert [reply.metadata.reply_to_message_id for reply in grid.pull_messages(["m0"])] == ["m0"]


def test_the_simulations_in_memory_grid_looks_for_replies_every_hundredth_of_a_second() -> None:
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.superlink.federation import NoOpFederationManager
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    grid = InMemoryGrid(LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()))
    assert grid.pull_interval == 0.1  # Flower's.
    assert prompt(grid, "simulation") is grid and grid.pull_interval == IN_MEMORY_POLL_SECONDS == 0.01
    assert isinstance(prompt(SlowNodes({}), "deployment"), PromptGrid)
