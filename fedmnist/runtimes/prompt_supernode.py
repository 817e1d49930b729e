"""``flower-supernode``, asking the SuperLink for messages every 0.2 s while idle instead of every 3 s.

Flower 1.42's SuperNode sleeps 3 s after each pull that brought no message
(``flwr.supernode.start_client_internal``; no setting changes it), so a message
reached a SuperNode 1.5 s after it was sent, on average, and a SecAgg+ round
is five messages. The local Deployment Runtime that ``./run.sh --runtime
deployment`` starts runs this script instead of ``flower-supernode``: the same
arguments and the same SuperNode, only that wait shorter. A SuperNode on
another machine is Flower's own command and works the same, with Flower's wait.

    python prompt_supernode.py FLOWER_SUPERNODE_ARGUMENTS...

It imports Flower only, so it runs as a script from any folder.
``tests/test_flower_internals.py`` pins the Flower code it relies on.
"""

from __future__ import annotations

import time
from typing import Any

from flwr.supernode import start_client_internal
from flwr.supernode.cli import flower_supernode

FLOWER_IDLE_WAIT_SECONDS = 3  # What Flower's SuperNode sleeps after a pull that brought no message.
IDLE_WAIT_SECONDS = 0.2  # What this one sleeps instead: a small HTTP request five times a second.


class PromptClock:
    """The ``time`` module as Flower's SuperNode loop sees it, with the idle wait shortened."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(IDLE_WAIT_SECONDS if seconds == FLOWER_IDLE_WAIT_SECONDS else seconds)


def main() -> None:
    start_client_internal.time = PromptClock()  # type: ignore[assignment]  # A stand-in for the module.
    flower_supernode()


if __name__ == "__main__":
    main()
