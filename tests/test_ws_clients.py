"""WebSocket participants in real runs: the /ws protocol against server.py, NumPy clients and browser tabs."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from conftest import PROJECT_ROOT, free_port, on_5k, start_script, wait_for_port
from fedmnist.settings import defaults
from test_dashboard_live import CHROMIUM, CHROMIUM_FLAGS, finish

pytestmark = pytest.mark.slow  # Real processes for whole runs: the full tier (./test.sh), not --fast.

WS_CLIENT = str(PROJECT_ROOT / "examples" / "ws_client.py")


TOKEN = "a-test-join-token"  # The runs' and dashboards' join token here (./run.sh would make one).


@pytest.fixture(autouse=True)
def join_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The launcher and the dashboards these tests start take their join token from the environment."""
    monkeypatch.setenv(defaults.WS_TOKEN_VARIABLE, TOKEN)


def receive(socket: ClientConnection, timeout: float = 120) -> dict[str, Any]:
    return json.loads(socket.recv(timeout=timeout))


def receive_type(socket: ClientConnection, kind: str, timeout: float = 120) -> dict[str, Any]:
    message = receive(socket, timeout)
    assert message["type"] == kind, message
    return message


def start_ws_client(url: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, WS_CLIENT, "--url", url, *args],
        cwd=PROJECT_ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def history(out: Path, rounds: int) -> dict[str, Any]:
    return json.loads((out / "history" / f"history_{rounds}.json").read_text())


def test_the_protocol_against_a_real_server(tmp_path: Path, data_home: str) -> None:
    flower_port, port = free_port(), free_port()
    server = start_script(
        "server.py",
        "--rounds",
        "4",
        "--clients",
        "2",
        "--min-clients",
        "1",
        "--port",
        str(flower_port),
        *on_5k(tmp_path, data_home),
        "--model",
        "dense32",
        "--round-timeout",
        "60",
        log=tmp_path / "server.log",
    )
    dashboard = start_script(
        "-m",
        "fedmnist.dashboard",
        "--out",
        str(tmp_path),
        "--dashboard-port",
        str(port),
        "--flower-server",
        f"127.0.0.1:{flower_port}",
        "--ws-partitions",
        "0,1",
        "--data-home",
        data_home,
        "--ws-answer-timeout",
        "5",
        log=tmp_path / "dashboard.log",
    )
    url = f"ws://127.0.0.1:{port}/ws?token={TOKEN}"
    numpy_client = None
    try:
        wait_for_port(port, dashboard, timeout=60)
        # Without the run's join token (or with another): one error, then the connection closes.
        for strangers_url in (f"ws://127.0.0.1:{port}/ws", f"ws://127.0.0.1:{port}/ws?token=guess"):
            with connect(strangers_url, proxy=None) as stranger:
                assert "need its join token" in receive_type(stranger, "error")["error"]
                with pytest.raises(ConnectionClosed):
                    stranger.recv(timeout=10)
        # Before a join: bad messages get one error each, the connection stays.
        with connect(url, proxy=None) as stranger:
            stranger.send(b"\x00")
            assert "JSON text, not bytes" in receive_type(stranger, "error")["error"]
            stranger.send('{"type": "fit_result", "round": 1, "weights": [], "num_examples": 5}')
            assert "was not asked for" in receive_type(stranger, "error")["error"]
            stranger.send('{"type": "join", "partition": 7}')
            assert "partition 7 is not free" in receive_type(stranger, "error")["error"]
            stranger.send("x" * 70_000)  # Over the 64 KB a participant may send before it knows the model.
            with pytest.raises(ConnectionClosed) as closed:
                stranger.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

        with connect(url, proxy=None, max_size=None) as socket:
            socket.send("{not json")
            assert receive_type(socket, "error")["error"].startswith("not JSON")
            socket.send(json.dumps({"type": "join", "name": "test participant"}))
            assert receive_type(socket, "welcome")["partition"] == 0
            socket.send(json.dumps({"type": "join"}))
            assert "already joined" in receive_type(socket, "error")["error"]
            numpy_client = start_ws_client(url, "--name", "numpy", "--partition", "1")

            data = receive_type(socket, "data")
            pixels = np.frombuffer(base64.b64decode(data["train"]["pixels"]), np.uint8)
            assert (data["partition"], data["num_partitions"], data["scheme"]) == (0, 2, "iid")
            assert pixels.size == 784 * data["train"]["count"] == 784 * len(data["train"]["labels"])
            assert set(data["train"]["labels"]) == set(range(10))

            # Round 1: a wrong answer is refused with a reason; the right one is counted.
            fit = receive_type(socket, "fit")
            assert fit["round"] == 1 and [t["shape"] for t in fit["weights"]] == [[784, 32], [32], [32, 10], [10]]
            assert fit["config"]["model"] == "dense32" and fit["config"]["local-epochs"] == 1
            answer = {
                "type": "fit_result",
                "round": 1,
                "weights": fit["weights"][:2],
                "num_examples": 100,
                "metrics": {"accuracy": 0.5, "loss": 1.0},
            }
            socket.send(json.dumps(answer))
            assert receive_type(socket, "error")["error"] == "weights: expected 4 tensors, got 2"
            bad = [dict(t) for t in fit["weights"]]
            bad[3] = {"shape": [10], "dtype": "float32", "values": ["a"] * 10}
            socket.send(json.dumps({**answer, "weights": bad}))
            assert receive_type(socket, "error")["error"] == "weights.3: values must be numbers"
            socket.send(json.dumps({**answer, "weights": fit["weights"]}))
            evaluate = receive_type(socket, "evaluate")
            socket.send(
                json.dumps(
                    {
                        "type": "evaluate_result",
                        "round": 1,
                        "loss": 2.0,
                        "num_examples": 50,
                        "metrics": {"accuracy": 0.25},
                    }
                )
            )

            # Round 2: NaN weights reach the server's update validation, which rejects them.
            fit = receive_type(socket, "fit")
            assert fit["round"] == 2
            nan_weights = [{**t, "values": (np.full(t["shape"], np.nan)).tolist()} for t in fit["weights"]]
            socket.send(json.dumps({**answer, "round": 2, "weights": nan_weights}))
            evaluate = receive_type(socket, "evaluate")
            socket.send(
                json.dumps(
                    {
                        "type": "evaluate_result",
                        "round": evaluate["round"],
                        "loss": 2.0,
                        "num_examples": 50,
                        "metrics": {"accuracy": 0.25},
                    }
                )
            )
            # Round 3: no answer in time is a failure for this round only.
            assert receive_type(socket, "fit")["round"] == 3
            timeout_error = receive_type(socket, "error", timeout=30)["error"]
            assert timeout_error == "no fit_result for round 3 within 5 s; the round counts it as a failure"
            evaluate = receive_type(socket, "evaluate")
            socket.send(
                json.dumps(
                    {
                        "type": "evaluate_result",
                        "round": 3,
                        "loss": 2.0,
                        "num_examples": 50,
                        "metrics": {"accuracy": 0.25},
                    }
                )
            )
            # Round 4: leave mid-round.
            assert receive_type(socket, "fit")["round"] == 4
        numpy_output, _ = numpy_client.communicate(timeout=120)
        server.wait(timeout=60)
    finally:
        for process in (server, dashboard, numpy_client):
            if process is not None and process.poll() is None:
                process.kill()
    assert numpy_client.returncode == 0, numpy_output
    assert "numpy: the server finished the run" in numpy_output
    assert server.returncode == 0, (tmp_path / "server.log").read_text()
    rounds = history(tmp_path, 4)["rounds"]
    assert [r["fit_results"] for r in rounds] == [2, 1, 1, 1]  # Round 2: the NaN update is rejected.
    assert sorted(c["partition_id"] for c in rounds[0]["per_client"]) == [0, 1]
    mine = next(c for c in rounds[0]["per_client"] if c["partition_id"] == 0)
    assert mine["fit"]["examples"] == 100 and mine["evaluate"]["accuracy"] == 0.25
    assert rounds[1]["rejected_updates"] == 1 and "non-finite values" in " ".join(rounds[1]["failure_reasons"])
    assert rounds[2]["fit_failures"] == 1 and rounds[2]["evaluate_results"] == 2
    assert "no fit_result for round 3 within 5 s" in " ".join(rounds[2]["failure_reasons"])
    # Round 4: leaving mid-round is one failure; the evaluation goes on without it.
    assert rounds[3]["fit_failures"] == 1 and rounds[3]["evaluate_results"] == 1
    assert "disconnected" in " ".join(rounds[3]["failure_reasons"])
    log = (tmp_path / "dashboard.log").read_text()
    assert "test participant joined as partition 0" in log and "Traceback" not in log


def test_a_websocket_client_refuses_a_server_that_sends_no_settings_in_one_line(tmp_path: Path, data_home: str) -> None:
    flower_port, port = free_port(), free_port()
    server = start_script(
        "tests/stock_server.py", str(flower_port), "1", "--initial-model", log=tmp_path / "server.log"
    )
    dashboard = start_script(
        "-m",
        "fedmnist.dashboard",
        *("--out", str(tmp_path), "--dashboard-port", str(port), "--flower-server", f"127.0.0.1:{flower_port}"),
        *("--ws-partitions", "0", "--data-home", data_home),
        log=tmp_path / "dashboard.log",
    )
    try:
        wait_for_port(port, dashboard, timeout=60)
        numpy_client = subprocess.run(
            [sys.executable, WS_CLIENT, "--url", f"ws://127.0.0.1:{port}/ws", "--token", TOKEN, "--name", "numpy"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        for process in (server, dashboard):  # A stock server whose client left waits for another for ever.
            process.kill()
            process.wait()
    assert numpy_client.returncode == 1, numpy_client.stdout + numpy_client.stderr
    refusal = (
        "error: numpy: the server sent no server-round, run-id, num-partitions, dataset, seed, partition, model, "
        "attack, malicious, local-epochs, batch-size, learning-rate, keep-optimizer (a fedmnist server, server.py or "
        "./run.sh, sends the run's settings with every round)"
    )
    assert numpy_client.stderr.splitlines() == [refusal]
    assert "trained on" not in numpy_client.stdout


def start_run_with_ws_clients(out: Path, data_home: str, port: int, *args: str) -> subprocess.Popen:
    """``./run.sh`` for 3 rounds of 3 clients, 2 of them WebSocket participants, in the background."""
    return subprocess.Popen(
        [
            "bash",
            str(PROJECT_ROOT / "run.sh"),
            "--rounds",
            "3",
            "--clients",
            "3",
            "--ws-clients",
            "2",
            "--model",
            "dense32",
            "--port",
            str(free_port()),
            "--dashboard-port",
            str(port),
            *on_5k(out, data_home),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def assert_three_clients_trained(out: Path) -> None:
    rounds = history(out, 3)["rounds"]
    assert [
        (r["fit_results"], r["rejected_updates"], r["fit_failures"], r["evaluate_results"], r["connected_clients"])
        for r in rounds
    ] == [(3, 0, 0, 3, 3)] * 3  # Every update accepted, the WebSocket clients' too.
    assert sorted(c["partition_id"] for c in rounds[-1]["per_client"]) == [0, 1, 2]
    accuracy = [r["centralized"]["accuracy"] for r in rounds]
    assert accuracy[-1] > 0.7 and accuracy[0] < accuracy[-1]
    assert rounds[-1]["evaluate_reporting"] == {"accuracy": 3, "loss": 3}


def test_two_numpy_clients_and_a_client_py_finish_a_run_over_tls(tmp_path: Path, data_home: str) -> None:
    port = free_port()
    run = start_run_with_ws_clients(tmp_path, data_home, port, "--tls")  # The dashboard relays over TLS too.
    clients = []
    try:
        wait_for_port(port, run, timeout=60)
        clients = [start_ws_client(f"ws://127.0.0.1:{port}/ws?token={TOKEN}", "--name", f"numpy {n}") for n in (1, 2)]
        outputs = [client.communicate(timeout=180)[0] for client in clients]
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
        stdout, _ = finish(run)
    assert [client.returncode for client in clients] == [0, 0], outputs
    assert all("round 3: trained on" in output for output in outputs), outputs
    assert f"waiting for 2 WebSocket client(s): open http://127.0.0.1:{port}/client?token={TOKEN} " in stdout
    assert_three_clients_trained(tmp_path)


def test_two_browser_tabs_and_a_client_py_finish_a_run(tmp_path: Path, data_home: str) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: ./test.sh installs Debian's chromium with apt-get, which failed here")
    from playwright.sync_api import sync_playwright

    port = free_port()
    run = start_run_with_ws_clients(tmp_path, data_home, port)
    try:
        wait_for_port(port, run, timeout=60)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
            errors: list[str] = []
            tabs = []
            for number in (1, 2):
                tab = browser.new_page(viewport={"width": 1200, "height": 900})
                tab.on("pageerror", lambda error: errors.append(str(error)))
                tab.goto(f"http://127.0.0.1:{port}/client?name=tab%20{number}&token={TOKEN}")
                tabs.append(tab)
            for tab in tabs:
                tab.wait_for_function("document.getElementById('status').dataset.state === 'finished'", timeout=180_000)
            rows = [
                tab.evaluate(
                    "[...document.querySelectorAll('#rounds tbody tr')].map((tr) => "
                    "[...tr.children].map((td) => td.textContent))"
                )
                for tab in tabs
            ]
            partitions = sorted(str(tab.text_content("#partition")) for tab in tabs)
            tabs[0].screenshot(path=str(tmp_path / "browser-client.png"), full_page=True)
            browser.close()
    finally:
        finish(run)
    assert errors == []
    assert partitions == ["1 of 3", "2 of 3"]
    for tab_rows in rows:
        assert [row[0] for row in tab_rows] == ["1", "2", "3"]
        assert all("–" not in row for row in tab_rows), tab_rows  # Train and validation numbers each round.
        assert float(tab_rows[-1][4].rstrip("%")) > 60
    assert (tmp_path / "browser-client.png").stat().st_size > 10_000
    assert_three_clients_trained(tmp_path)
