"""The dashboard's stop: at once when no page is open (after its clean-up), as uvicorn's own when one is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import PROJECT_ROOT
from fedmnist.common.ports import free_port, wait_until_listening
from fedmnist.dashboard.app import create_app
from fedmnist.dashboard.serve import uvicorn_server

SERVE = """
import sys
from fedmnist.dashboard.app import create_app
from fedmnist.dashboard.serve import uvicorn_server
app = create_app(sys.argv[1])
uvicorn_server(app, "127.0.0.1", int(sys.argv[2]), on_exit=lambda: print("cleaned up", flush=True)).run()
"""


def test_a_stop_signal_ends_an_idle_dashboard_at_once_after_its_clean_up(tmp_path: Path) -> None:
    port = free_port()
    serving = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(tmp_path), str(port)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert wait_until_listening(port, serving, 30)
        time.sleep(0.3)  # Until the server has seen that probe's connection close: then no connection is open.
        serving.terminate()
        printed, _ = serving.communicate(timeout=10)
    finally:
        serving.kill()
    # on_exit ran (uvicorn's own stop would not call it) and the process ended by the signal, as uvicorn's does.
    assert printed == "cleaned up\n" and serving.returncode == -signal.SIGTERM


def test_with_a_connection_open_the_dashboard_stops_as_uvicorn_does(tmp_path: Path) -> None:
    cleaned: list[bool] = []
    server = uvicorn_server(create_app(tmp_path), "127.0.0.1", free_port(), on_exit=lambda: cleaned.append(True))
    server.started = True
    server.server_state.connections.add(object())  # type: ignore[arg-type]  # A page's connection.
    server.handle_exit(signal.SIGTERM, None)  # Were it the prompt stop, this test's process would end here.
    assert server.should_exit and cleaned == [] and os.getpid()


def test_the_dashboard_of_run_sh_cleans_its_keras_files_up_when_stopped(tmp_path: Path) -> None:
    """``python -m fedmnist.dashboard``'s own clean-up: the folder of .keras files it made is gone after SIGTERM."""
    port, temporary = free_port(), tmp_path / "tmp"
    temporary.mkdir()
    serving = subprocess.Popen(
        [sys.executable, "-m", "fedmnist.dashboard", "--out", str(tmp_path), "--dashboard-port", str(port)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "TMPDIR": str(temporary)},
        stdout=subprocess.DEVNULL,
    )
    try:
        assert wait_until_listening(port, serving, 30)
        assert [p.name.startswith("fedmnist-dashboard-") for p in temporary.iterdir()] == [True]
        serving.terminate()
        serving.wait(timeout=10)
    finally:
        serving.kill()
    assert serving.returncode == -signal.SIGTERM and list(temporary.iterdir()) == []
