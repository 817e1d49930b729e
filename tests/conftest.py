"""Shared fixtures: no network, a warm MNIST cache, free ports, process helpers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from flwr.server.client_proxy import ClientProxy

from fedmnist.common.ports import free_port, wait_until_listening
from fedmnist.data.sources import MNIST_5K, MnistData, load_mnist
from fedmnist.results.records import RoundRecord

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Flower posts an event to its telemetry server when a server, client or simulation starts and ends:
# the tests' processes (they inherit this) contact no address but loopback and their own namespaces.
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Return once ``port`` accepts connections; fail the test if ``process`` dies first or time runs out."""
    if not wait_until_listening(port, process, timeout):
        raise RuntimeError(f"the process exited with {process.returncode} before it listened on {port}")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every connection that leaves this machine, as in a classroom without internet."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else ""
        if isinstance(address, tuple) and host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(101, f"network is unreachable (tests are offline): {host}")
        return real_connect(self, address)

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "::1", "localhost", None):
            raise socket.gaierror(-2, f"name resolution disabled in tests: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(scope="session")
def data_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A scikit-learn data home whose fedmnist cache already holds the 5k set."""
    home = tmp_path_factory.mktemp("data_home")
    load_mnist(MNIST_5K, str(home))
    return str(home)


@pytest.fixture(scope="session")
def mnist_5k(data_home: str) -> MnistData:
    return load_mnist(MNIST_5K, data_home)


def run_script(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run a project script with this interpreter; capture text output."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def run_sh(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``./run.sh ARGS`` as a user types it; capture text output."""
    return subprocess.run(
        ["bash", str(PROJECT_ROOT / "run.sh"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=env,
    )


@dataclass(frozen=True)
class FinishedRun:
    out: Path  # Its results folder.
    result: subprocess.CompletedProcess  # ./run.sh's exit status and output.


@pytest.fixture(scope="session")
def classic_run(tmp_path_factory: pytest.TempPathFactory, data_home: str) -> FinishedRun:
    """One real ``./run.sh`` of 3 clients, 2 rounds, dashboard and centralized baseline, once a session.

    The smoke test reads every output it wrote; the other runtimes' tests compare their results with it.
    """
    out = tmp_path_factory.mktemp("classic")
    return FinishedRun(out, run_sh(*classic_run_flags(out, data_home), "--dashboard-port", str(free_port())))


@dataclass(frozen=True)
class SimulatedSweep:
    folder: Path  # The sweep's folder: a folder per setting.
    ray_starts: int  # How many local Ray clusters it started.


SMALL_RUN = ("--clients", "3", "--rounds", "2", "--dataset", "mnist-5k")


@pytest.fixture(scope="session")
def simulated_strategies(tmp_path_factory: pytest.TempPathFactory, data_home: str) -> SimulatedSweep:
    """``./run.sh sweep --grid strategies --runtime simulation``, 3 clients, 2 rounds: the folder of its settings.

    Its fedavg setting is the classic run's settings on the simulation runtime. Its Ray keeps its
    sessions in a folder of its own (``RAY_TMPDIR``, short: Ray's sockets live there), where the
    clusters it started are counted, whatever the other workers' tests start meanwhile.
    """
    out = tmp_path_factory.mktemp("simulated")
    ray_home = Path(tempfile.mkdtemp(prefix="fmray"))
    try:
        done = run_sh(
            *("sweep", "--grid", "strategies", "--runtime", "simulation", *SMALL_RUN, "--port", str(free_port())),
            *("--no-dashboard", "--out", str(out), "--data-home", data_home),
            timeout=900,
            env={**os.environ, "RAY_TMPDIR": str(ray_home)},
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return SimulatedSweep(out / "sweep" / "strategies", len(list((ray_home / "ray").glob("session_2*"))))
    finally:
        shutil.rmtree(ray_home, ignore_errors=True)


# The runs many tests read, each made once a session by the first test that needs it. Under xdist
# (./test.sh runs three workers) every test reading one of them goes to one worker (``xdist_group``,
# below), so each is still made once; they come first, longest first, the unit tests last: those
# fill in beside the last long runs. ``shared_machines`` stands for tests/test_machines.py's scenarios.
SHARED_RUNS = ("classic_run", "simulated_strategies", "shared_machines", "hundred_clients_run", "tls_shards_cnn_run")


@pytest.hookimpl(tryfirst=True)  # Before xdist's own hook reads the xdist_group marks.
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that read the same shared runs with one ``xdist_group``; order them first, then the
    other slow tests, then the unit tests (each in file order)."""
    groups = shared_run_groups({item.nodeid: set(getattr(item, "fixturenames", ())) for item in items})
    for item in items:
        if item.nodeid in groups:
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))

    def order(item: pytest.Item) -> tuple[int, int]:
        if item.nodeid in groups:
            return 0, SHARED_RUNS.index(groups[item.nodeid])
        return (1 if item.get_closest_marker("slow") else 2), 0

    items.sort(key=order)


def shared_run_groups(fixtures_of: dict[str, set[str]]) -> dict[str, str]:
    """Each test that reads a shared run (``SHARED_RUNS``) -> its group: the first of the shared runs that
    it, or any test that shares one with it, reads (a test reading two runs joins their groups)."""
    group = {name: name for name in SHARED_RUNS}

    def root(name: str) -> str:
        while group[name] != name:
            name = group[name]
        return name

    for fixtures in fixtures_of.values():
        roots = sorted({root(name) for name in fixtures & group.keys()}, key=SHARED_RUNS.index)
        for other in roots[1:]:
            group[other] = roots[0]
    return {
        test: root(min(fixtures & group.keys(), key=SHARED_RUNS.index))
        for test, fixtures in fixtures_of.items()
        if fixtures & group.keys()
    }


# A simulation of 100 clients sampling a tenth for each stage of each of 4 rounds, on the 5k rows.
# A tenth of them run the inner-product manipulation (colluding), against centered clipping, whose state
# (the last round's update) a resumed run must carry on from.
HUNDRED_CLIENTS = (
    *("--runtime", "simulation", "--clients", "100", "--fraction-fit", "0.1", "--fraction-evaluate", "0.1"),
    *("--strategy", "centeredclip", "--attack", "ipm", "--malicious", "0.1"),
)
HUNDRED_CLIENTS_ROUNDS = 4


@pytest.fixture(scope="session")
def hundred_clients_run(tmp_path_factory: pytest.TempPathFactory, data_home: str) -> FinishedRun:
    """``server.py`` with ``HUNDRED_CLIENTS``, uninterrupted, once a session: what a rerun or a resumed run must equal."""
    out = tmp_path_factory.mktemp("hundred")
    rounds = ("--rounds", str(HUNDRED_CLIENTS_ROUNDS))
    return FinishedRun(out, run_script("server.py", *HUNDRED_CLIENTS, *rounds, *on_5k(out, data_home), timeout=300))


def classic_run_flags(out: Path, data_home: str) -> list[str]:
    """``classic_run``'s flags, for a test that runs it again (on a port of its own)."""
    return [
        *("--rounds", "2", "--clients", "3", "--port", str(free_port())),
        *on_5k(out, data_home),
        *("--baseline", "--name", "two-round check"),
    ]


# What differs between identical runs by nature: how long things took, Flower's client ids (random)
# and where a virtual client trained (its Ray node).
TIMINGS = {"seconds", "coordination_seconds", "client_fit_seconds", "client_evaluate_seconds", "centralized_seconds"}


def numbers(record: RoundRecord) -> dict[str, Any]:
    """A round record without its timings and Flower's client ids: what the same seed must reproduce."""
    kept: dict[str, Any] = {key: value for key, value in record.items() if key not in TIMINGS}
    kept["per_client"] = [
        {
            key: {k: v for k, v in value.items() if k != "seconds"} if isinstance(value, dict) else value
            for key, value in entry.items()
            if key not in ("cid", "node")
        }
        for entry in record.get("per_client", [])
    ]
    return kept


def on_5k(out: Path | str, data_home: str) -> list[str]:
    """A small run's data and results flags: the 5k MNIST sample from ``data_home``, results in ``out``."""
    return ["--dataset", "mnist-5k", "--out", str(out), "--data-home", data_home]


def start_watched(command: list[str], *, merge_stderr: bool = False) -> subprocess.Popen:
    """Start ``command`` in the project folder, its output in pipes the test reads, in a session of its own.

    Its own session: a test can signal its whole process group as a terminal's Ctrl-C does.
    """
    return subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def read_until(process: subprocess.Popen, text: str) -> str:
    """Read ``process``'s output up to and including the first line holding ``text``; return what was read."""
    said = []
    for line in stream(process.stdout):
        said.append(line)
        if text in line:
            break
    return "".join(said)


def stream(handle: IO[str] | None) -> IO[str]:
    """A process's stdout or stderr, which Popen types as optional: there when the test asked for a PIPE."""
    assert handle is not None, "the process was started with stdout/stderr=subprocess.PIPE"
    return handle


def start_script(*args: str, log: Path) -> subprocess.Popen:
    """Start a project script in the background, its output going to ``log``."""
    with open(log, "wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-u", *args],
            cwd=PROJECT_ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


class IdleClient(ClientProxy):
    """A connected client that is only counted: any request to it is an error."""

    def _refuse(self, *args: object, **kwargs: object):
        raise NotImplementedError("IdleClient takes no requests")

    get_properties = get_parameters = fit = evaluate = reconnect = _refuse


def assert_the_strategy_trains_every_round(summary: dict, strategy: str, clients: int, rounds: int) -> None:
    """Every round aggregated every honest update, and the held-out accuracy rose after round 1.

    FedAdam once returned float64 weights from round 1 on; validation then refused every float32 update
    of rounds 2-40 and the model stood still at round 1's accuracy, while a floor of 0.3 passed.
    """
    assert summary["config"]["strategy"] == strategy
    records = summary["rounds"]
    assert [(r["round"], r["fit_results"], r["rejected_updates"], r["fit_failures"]) for r in records] == [
        (n, clients, 0, 0) for n in range(1, rounds + 1)
    ], strategy
    accuracy = [a for _, a in summary["history"]["metrics_centralized"]["accuracy"]]
    assert accuracy[0] < accuracy[1] < accuracy[-1], (strategy, accuracy)
    assert all(r["evaluate"]["accuracy"] > 0 for r in records)  # Weighted metrics kept.
