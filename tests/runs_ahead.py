"""Whole runs the suite shares, started when the session starts, one after another on a thread of their own.

The unit tests at the start of the suite use one core; these runs (a few processes each, mostly
TensorFlow starting) take the other meanwhile, instead of starting only when the first test that
reads them is reached. Their fixtures (``conftest.AHEAD`` names them) then wait for them. Only the
runs some selected test needs are started; each keeps its own ports (and a dashboard port of its
own, not the default one another test's run may want).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    """A run to start ahead: ``run()`` gives what its fixture returns."""

    run: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


class RunsAhead:
    """Runs ``jobs`` in order on one thread; ``result(name)`` waits for one (or runs it now if not started ahead).

    ``after``: what the thread waits for before the first job (another ``RunsAhead``'s ``wait_all``).
    """

    def __init__(self, jobs: Mapping[str, Callable[[], Any]], after: Callable[[], None] | None = None) -> None:
        self.jobs = {name: Job(run) for name, run in jobs.items()}
        self.after = after
        threading.Thread(target=self._work, name="runs-ahead", daemon=True).start()

    def _work(self) -> None:
        if self.jobs and self.after is not None:
            self.after()
        for job in self.jobs.values():
            try:
                job.value = job.run()
            except BaseException as error:  # noqa: BLE001  Raised again in the fixture that waits for it.
                job.error = error
            finally:
                job.done.set()

    def wait_all(self) -> None:
        """Return once every run started ahead is done (a test that wants the machine to itself)."""
        for job in self.jobs.values():
            job.done.wait()

    def result(self, name: str, run: Callable[[], Any]) -> Any:
        """The value of the run ``name`` started ahead, waiting for it; ``run()`` now if it was not."""
        job = self.jobs.get(name)
        if job is None:
            return run()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.value
