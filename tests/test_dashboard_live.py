"""The dashboard beside real federations: ./run.sh, a WebSocket client and headless Chromium."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from conftest import PROJECT_ROOT, free_port, on_5k, start_script, start_watched, wait_for_port
from fedmnist.results.records import read_summary

pytestmark = pytest.mark.slow  # Real processes for whole runs: the full tier (./test.sh), not --fast.

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; ./test.sh installs it where missing.
# Flags for a sandbox-less, offline machine: without the networking ones Chromium keeps
# trying to reach Google's services, and every attempt is refused here.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def start_run_sh(tmp_path: Path, data_home: str, *args: str) -> subprocess.Popen:
    """``./run.sh`` for 3 rounds of 2 clients on the offline data, in the background."""
    return start_watched(
        [
            "bash",
            str(PROJECT_ROOT / "run.sh"),
            "--rounds",
            "3",
            "--clients",
            "2",
            "--port",
            str(free_port()),
            *on_5k(tmp_path, data_home),
            *args,
        ]
    )


def finish(process: subprocess.Popen, timeout: float = 180) -> tuple[str, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stdout + stderr
    return stdout, stderr


def test_run_sh_dashboard_pushes_each_round_of_a_real_run_over_the_websocket(tmp_path: Path, data_home: str) -> None:
    port = free_port()
    run = start_run_sh(tmp_path, data_home, "--dashboard-port", str(port))
    try:
        wait_for_port(port, run, timeout=60)
        with connect(f"ws://127.0.0.1:{port}/ws/events", proxy=None, open_timeout=30) as socket:
            snapshot = json.loads(socket.recv(timeout=30))
            seen = [r["round"] for r in (snapshot["run"] or {"rounds": []})["rounds"]]
            live: list[dict[str, Any]] = []
            deadline = time.monotonic() + 150
            while len(seen) + len(live) < 3 and time.monotonic() < deadline:
                event = json.loads(socket.recv(timeout=deadline - time.monotonic()))
                if event["type"] == "snapshot":  # The run's log began after we connected.
                    seen, live = [r["round"] for r in event["run"]["rounds"]], []
                elif event["type"] == "round":
                    live.append(event)
    finally:
        stdout, _ = finish(run)
    assert snapshot["type"] == "snapshot"
    assert seen + [e["record"]["round"] for e in live] == [1, 2, 3]
    assert live, "no round arrived live: the clients were slower to start than the dashboard"
    last = live[-1]["record"]
    assert last["accuracy_centralized"] > 0.5 and last["fit_results"] == 2 and last["connected_clients"] == 2
    assert f"dashboard: http://127.0.0.1:{port}/" in stdout
    # Without a terminal, run.sh stops its dashboard with the run.
    with pytest.raises(ConnectionRefusedError):
        connect(f"ws://127.0.0.1:{port}/ws/echo", proxy=None, open_timeout=5)


def test_a_dashboard_that_dies_does_not_stop_the_run(tmp_path: Path, data_home: str) -> None:
    port = free_port()
    run = start_run_sh(tmp_path, data_home, "--dashboard-port", str(port))
    wait_for_port(port, run, timeout=60)
    dashboard = subprocess.run(["pgrep", "-f", f"fedmnist.dashboard --out {tmp_path}"], capture_output=True, text=True)
    os.kill(int(dashboard.stdout.split()[0]), signal.SIGKILL)
    _, stderr = finish(run)
    assert "warning: the dashboard stopped; training goes on" in stderr
    assert json.loads((tmp_path / "history" / "history_3.json").read_text())["rounds"][-1]["round"] == 3


def test_chromium_shows_the_rounds_of_a_real_run_live(tmp_path: Path, data_home: str) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: ./test.sh installs Debian's chromium with apt-get, which failed here")
    from playwright.sync_api import sync_playwright

    # A dashboard of its own on the run's folder, as `./run.sh dashboard` starts it. The run
    # finds the port taken, starts none, and this one shows the run all the same.
    port = free_port()
    dashboard = start_script(
        "-m",
        "fedmnist.dashboard",
        "--out",
        str(tmp_path),
        "--dashboard-port",
        str(port),
        log=tmp_path / "dashboard.log",
    )
    try:
        wait_for_port(port, dashboard, timeout=60)
        run = start_run_sh(tmp_path, data_home, "--dashboard-port", str(port))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.goto(f"http://127.0.0.1:{port}/")
            rounds_at_load = int(page.evaluate("document.body.dataset.roundsShown"))
            page.wait_for_function("document.body.dataset.roundsShown === '3'", timeout=150_000)
            page.wait_for_function("document.getElementById('status').textContent === 'finished'", timeout=60_000)
            labels = page.evaluate("fedmnistDashboard.charts.accuracy.data.labels")
            held_out = page.evaluate("fedmnistDashboard.charts.accuracy.data.datasets[0].data")
            clients = page.evaluate("fedmnistDashboard.charts.accuracy.data.datasets[1].data")
            round_text = page.text_content("#round")
            # The panels a person reads after a run: best round, each client, labels, confusion, files.
            page.wait_for_function(
                "document.querySelector('#file-list a[href*=\"plots%2Fmistakes.png\"]') !== null", timeout=30_000
            )
            panels = page.evaluate("""() => ({
                best: document.getElementById('best-accuracy').textContent,
                bestRound: document.getElementById('best-round').textContent,
                checksum: document.getElementById('weights-checksum').textContent,
                wall: document.getElementById('seconds').textContent,
                clientLines: fedmnistDashboard.charts.clientAccuracy.data.datasets.map((d) => [d.label, d.data.length]),
                labelBars: fedmnistDashboard.charts.labels.data.datasets.length,
                labelClients: fedmnistDashboard.charts.labels.data.labels,
                confusionRows: document.querySelectorAll('#confusion tr').length,
                confusionCaption: document.getElementById('confusion-caption').textContent,
                files: [...document.querySelectorAll('#file-list a')].map((a) => a.textContent),
                config: [...document.querySelectorAll('#config-table td:first-child')].map((td) => td.textContent),
                every: Object.fromEntries([...document.querySelectorAll('#config-table tr')].map(
                    (tr) => [...tr.children].map((td) => td.textContent))),
                shaped: [...document.querySelectorAll('#shaped-table tr')].map((tr) => [...tr.children].map((td) => td.textContent)),
                folded: !document.getElementById('config-details').open,
                roundSteps: [3, 10, 14, 40, 100, 1000].map(fedmnistDashboard.roundStep),
                clientColours: fedmnistDashboard.charts.clientAccuracy.data.datasets.map((d) => d.borderColor),
                accuracyMin: fedmnistDashboard.charts.accuracy.options.scales.y.min,
                mistakes: document.querySelectorAll('#mistakes canvas').length,
                mistakesCaption: document.getElementById('mistakes-caption').textContent,
                badge: document.getElementById('connection').textContent,
                compareHidden: document.getElementById('compare-chart').parentElement.hidden,
            })""")
            page.check("#compare-list input")
            page.wait_for_function("document.body.dataset.runsCompared === '1'", timeout=10_000)
            compare_hidden_after = page.evaluate("document.getElementById('compare-chart').parentElement.hidden")
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})  # A phone.
            page.wait_for_timeout(500)  # Chart.js resizes its canvases on the next frames.
            page.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)
            phone_overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            wide = page.evaluate(
                "[...document.querySelectorAll('*')].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1).map((e) => e.tagName + '#' + e.id + '.' + e.className).slice(0, 8)"
            )
            page_errors = list(errors)  # ReDoc below asks the internet for its footer logo, in vain.
            # The API docs render offline too: Swagger UI lists every endpoint, ReDoc its title.
            page.goto(f"http://127.0.0.1:{port}/docs")
            page.wait_for_function("document.querySelectorAll('.opblock').length === 4", timeout=30_000)
            page.goto(f"http://127.0.0.1:{port}/redoc")
            page.wait_for_selector("h1:has-text('fedmnist dashboard')", timeout=30_000)
            browser.close()
        stdout, _ = finish(run)
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=10)
    assert rounds_at_load < 3, "the page loaded after the run: nothing was shown live"
    assert labels == [0, 1, 2, 3] and round_text == "3 / 3"  # Round 0 is the starting model.
    assert held_out[0] < 0.3 and all(value > 0.5 for value in held_out[1:])
    assert clients[0] is None and all(value > 0.5 for value in clients[1:])  # Clients evaluate from round 1.
    assert page_errors == []
    assert (
        panels["best"].endswith("%")
        and panels["bestRound"].startswith("at round ")
        and panels["bestRound"].endswith(" of 3")
    )
    assert panels["wall"].endswith(" s") or "min" in panels["wall"]
    summary = read_summary(tmp_path / "history" / "history_3.json")  # The model the page names is the saved one.
    assert (
        panels["checksum"]
        == f"model {summary['weights_checksum']}"
        == f"model {summary['rounds'][-1]['weights_checksum']}"
    )
    assert panels["clientLines"] == [["client 0", 3], ["client 1", 3]]  # One line per client, every round.
    assert panels["labelBars"] == 10 and panels["labelClients"] == ["0", "1"]  # Ten digits, two clients.
    assert panels["confusionRows"] == 11 and "after round 3" in panels["confusionCaption"]
    assert {"plots/accuracy.png", "plots/clients.png", "plots/confusion.png", "history/history_3.json"} <= set(
        panels["files"]
    )
    assert "Local epochs" in panels["config"] and "local_epochs" not in panels["config"]
    # The Config card: what shaped this run first, every setting folded away, none shown as "not given".
    assert panels["shaped"] == [
        ["Strategy", "centeredclip"],  # What the default, auto, stands for.
        ["Model", "mlp"],
        ["Dataset", "mnist-5k"],
        ["Partition", "iid"],
        ["Rounds", "3"],
        ["Clients", "2"],
        ["Min clients", "1 (all but one)"],
        ["Local epochs", "1"],
        ["Batch size", "32"],
        ["Learning rate", "0.001"],
        ["Seed", "42"],
    ]
    assert panels["folded"] and panels["every"]["Name"].startswith("centeredclip-iid-2c-3r-")
    assert panels["every"]["Min clients"] == "1 (all but one)" and len(panels["every"]) > 30
    assert panels["roundSteps"] == [1, 1, 2, 5, 10, 100]  # Round ticks 0, 5, 10... for 40 rounds, not 0, 14, 28.
    from matplotlib.colors import to_hex  # clients.png's colours, in the same order.

    assert panels["clientColours"] == [to_hex(f"C{i}") for i in range(2)]
    assert panels["accuracyMin"] > 0.3  # The axis fits rounds 1-3, not round 0's ~10%.
    assert panels["mistakes"] == 16 and "after round 3" in panels["mistakesCaption"]
    assert panels["badge"] == "finished: from its files"  # Not "live": nothing will change any more.
    assert panels["compareHidden"] is True and compare_hidden_after is False  # No empty axes before a tick.
    assert phone_overflow <= 1, wide  # Nothing wider than a phone's screen.
    print(f"phone screenshot: {tmp_path / 'dashboard-phone.png'}")
    assert "dashboard port" in stdout and "in use" in stdout
    assert (tmp_path / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {tmp_path / 'dashboard.png'}")


def test_run_sh_refuses_the_same_port_for_flower_and_the_dashboard(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(PROJECT_ROOT / "run.sh"), "--port", "18555", "--dashboard-port", "18555", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert result.returncode == 2
    # The last line: a first ./run.sh in a fresh clone also says it installs requirements.txt.
    assert (
        result.stderr.strip().splitlines()[-1] == "error: --dashboard-port and --port are both 18555; choose two ports"
    )
