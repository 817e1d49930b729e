"""What every route of the dashboard reads: the runs' folder, the allowed origins, the participants' federation.

``create_app`` stores one ``Dashboard`` on the app; a route finds it on its request or WebSocket
(``dashboard_of``), so the routers (``fedmnist.dashboard.api``, ``fedmnist.dashboard.sockets``) hold no state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException
from starlette.requests import HTTPConnection

from fedmnist.dashboard.participants import Federation
from fedmnist.dashboard.runs import Run, find_runs
from fedmnist.dashboard.weights import KerasFiles


@dataclass
class Dashboard:
    """The dashboard of the runs under ``base``."""

    base: Path
    origins: list[str]
    federation: Federation
    poll_seconds: float
    keras_files: KerasFiles = field(default_factory=KerasFiles)

    def find(self, run_id: str | None) -> Run:
        """The run ``run_id`` (None: the most recently updated), or a 404 naming what is there."""
        runs = find_runs(self.base)
        if run_id is None:
            if not runs:
                raise HTTPException(404, f"no runs under {self.base} yet")
            return next(iter(runs.values()))
        if run_id not in runs:
            raise HTTPException(404, f"unknown run {run_id!r}; GET /api/runs lists them")
        return runs[run_id]


def dashboard_of(connection: HTTPConnection) -> Dashboard:
    """The ``Dashboard`` of the app serving ``connection`` (a request or a WebSocket)."""
    dashboard: Dashboard = connection.app.state.dashboard
    return dashboard
