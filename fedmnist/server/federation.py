"""What the server's run needs of a runtime: a federation step that drives Flower's ``Server`` for its rounds.

The entry points choose the runtime (``server.py`` and sweeps: ``fedmnist.runtimes.local``; the
ServerApp: ``fedmnist.runtimes.grid``) and hand ``run_server`` a ``Federation``; everything else of a
run (data, model, strategy, records, results) is the same on every runtime.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from concurrent.futures import Future
from types import TracebackType
from typing import Self

from flwr.common import ReconnectIns, Scalar
from flwr.server import Server, ServerConfig
from flwr.server.history import History
from flwr.server.server import reconnect_clients

from fedmnist.common.cli import take_back_stop_signals
from fedmnist.privacy.dp import PrivacyBudgetSpent
from fedmnist.server.run_strategy import TrainingStalled

RECONNECT_SECONDS = 1  # How long sweep clients wait before connecting to the next run's server.


class Federation(ABC):
    """A runtime's federation step; ``with federation:`` holds what it needs for the run (Ray, for one).

    ``workers_starting``, when set, is done once workers of the runtime's own are starting: the
    server's TensorFlow import waits for it, so that they have the CPU first (the simulation's Ray).
    """

    workers_starting: Future[None] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        return None

    @abstractmethod
    def run(self, server: Server, config: ServerConfig, client_config: dict[str, Scalar]) -> History | None:
        """Run ``server`` for ``config``'s rounds; ``client_config`` is what clients get before round 1's.

        Returns Flower's History when the runtime gives one (the run's own records are kept anyway).
        """


class AppServer(Server):
    """Flower's server, with Ctrl-C and SIGTERM handled by this app rather than by Flower.

    ``start_server`` installs handlers that stop gRPC and force the process to
    exit 5 s later, which can cut the saving of the completed rounds short (and
    a second signal then printed "Signal 15 ignored due to race condition").
    ``fit`` runs on the main thread right after, so it takes the signals back:
    they raise KeyboardInterrupt, which ``run_server`` turns into partial results.
    """

    def fit(self, num_rounds: int, timeout: float | None) -> tuple[History, float]:
        if threading.current_thread() is threading.main_thread():  # The simulation runs it in a thread of its own.
            take_back_stop_signals()
        try:
            return super().fit(num_rounds, timeout)
        except (PrivacyBudgetSpent, TrainingStalled):  # The run strategy ended the run: the caller says why.
            return History(), 0.0


class ReconnectingServer(AppServer):
    """Flower's server, but at the end it asks clients to come back shortly, not to leave.

    Flower's grpc-bidi client sleeps for the reconnect message's seconds and then
    connects again, to the next run's server on the same address.
    """

    def disconnect_all_clients(self, timeout: float | None) -> None:
        clients = list(self._client_manager.all().values())
        instruction = ReconnectIns(seconds=RECONNECT_SECONDS)
        reconnect_clients([(client, instruction) for client in clients], max_workers=self.max_workers, timeout=timeout)
