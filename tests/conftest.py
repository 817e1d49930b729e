"""Shared fixtures: no network, a warm MNIST cache, free ports, process helpers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import pytest
from flwr.server.client_proxy import ClientProxy

import across_machines
from fedmnist.common.ports import free_port, wait_until_listening
from fedmnist.data.sources import MNIST_5K, MnistData, load_mnist
from fedmnist.results.records import RoundRecord
from machines import Unavailable
from runs_ahead import RunsAhead

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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


def run_sh(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``./run.sh ARGS`` as a user types it; capture text output."""
    return subprocess.run(
        ["bash", str(PROJECT_ROOT / "run.sh"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class FinishedRun:
    out: Path  # Its results folder.
    result: subprocess.CompletedProcess  # ./run.sh's exit status and output.


@pytest.fixture(scope="session")
def classic_run(runs_ahead: RunsAhead, tmp_path_factory: pytest.TempPathFactory, data_home: str) -> FinishedRun:
    """One real ``./run.sh`` of 3 clients, 2 rounds, dashboard and centralized baseline, started once a session.

    The smoke test reads every output it wrote; the other runtimes' tests compare their results with it.
    """
    return runs_ahead.result("classic_run", lambda: start_classic_run(tmp_path_factory, data_home))


def start_classic_run(tmp_path_factory: pytest.TempPathFactory, data_home: str) -> FinishedRun:
    out = tmp_path_factory.mktemp("classic")
    return FinishedRun(out, run_sh(*classic_run_flags(out, data_home), "--dashboard-port", str(free_port())))


def start_tls_shards_cnn_run(tmp_path_factory: pytest.TempPathFactory, data_home: str) -> FinishedRun:
    """One round of ``./run.sh --tls``, 3 clients on 2 label shards each, the CNN (test_end_to_end reads it)."""
    out = tmp_path_factory.mktemp("tls_shards_cnn")
    result = run_sh(
        *("--tls", "--rounds", "1", "--clients", "3", "--port", str(free_port()), "--dashboard-port", str(free_port())),
        *("--partition", "shards:2", "--model", "cnn", *on_5k(out, data_home)),
    )
    return FinishedRun(out, result)


@dataclass(frozen=True)
class SimulatedSweep:
    folder: Path  # The sweep's folder: a folder per setting.
    ray_starts: int  # How many local Ray clusters it started.


RAY_SESSIONS = Path(tempfile.gettempdir()) / "ray"  # Where a local Ray makes a session_* folder each time it starts.


def ray_sessions() -> set[str]:
    return {p.name for p in RAY_SESSIONS.glob("session_2*")}


SMALL_RUN = ("--clients", "3", "--rounds", "2", "--dataset", "mnist-5k")


def start_simulated_strategies(tmp_path_factory: pytest.TempPathFactory, data_home: str) -> SimulatedSweep:
    """``./run.sh sweep --grid strategies --runtime simulation``, 3 clients, 2 rounds (test_runtimes reads it)."""
    out = tmp_path_factory.mktemp("simulated")
    before = ray_sessions()
    done = run_sh(
        *("sweep", "--grid", "strategies", "--runtime", "simulation", *SMALL_RUN, "--port", str(free_port())),
        *("--no-dashboard", "--out", str(out), "--data-home", data_home),
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return SimulatedSweep(out / "sweep" / "strategies", len(ray_sessions() - before))


def start_hundred_clients_run(tmp_path_factory: pytest.TempPathFactory, data_home: str) -> FinishedRun:
    out = tmp_path_factory.mktemp("hundred")
    rounds = ("--rounds", str(HUNDRED_CLIENTS_ROUNDS))
    return FinishedRun(out, run_script("server.py", *HUNDRED_CLIENTS, *rounds, *on_5k(out, data_home), timeout=300))


# The runs started ahead (tests/runs_ahead.py). The simulated sweep first, while only unit tests run
# beside it: it counts the Ray clusters started meanwhile, and no test of the suite's first minutes starts
# one. The 100-client simulation is not started ahead: it would overlap the Ray runs of test_end_to_end.
AHEAD = {
    "simulated_strategies": start_simulated_strategies,
    "classic_run": start_classic_run,
    "tls_shards_cnn_run": start_tls_shards_cnn_run,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The unit tests first, then the slow ones, then those that read the runs beside them, then the
    timing-sensitive ones (each group in file order): the shared runs started ahead (``runs_ahead``) take
    the other core while the unit tests run, and are done when the slow tests start; the runs beside
    (``runs_beside``) go on meanwhile, and are done when the tests that read them come; nothing runs
    beside a ``quiet`` test."""

    def group(item: pytest.Item) -> int:
        if item.get_closest_marker("quiet"):
            return 3
        if item.get_closest_marker("beside"):
            return 2
        return 1 if item.get_closest_marker("slow") else 0

    items.sort(key=group)


@pytest.fixture(autouse=True)
def machine_to_itself(request: pytest.FixtureRequest, runs_ahead: RunsAhead, runs_beside: RunsAhead) -> None:
    """A test that starts whole runs starts once the runs ahead are done; a timing-sensitive (``quiet``) one
    once the runs beside are done too."""
    if request.node.get_closest_marker("slow") or request.node.get_closest_marker("quiet"):
        runs_ahead.wait_all()
    if request.node.get_closest_marker("quiet"):
        runs_beside.wait_all()


@pytest.fixture(scope="session", autouse=True)
def runs_ahead(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_home: str) -> RunsAhead:
    """Start, on a thread of their own, the shared runs that the selected tests read (tests/runs_ahead.py)."""
    needed = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    return RunsAhead(
        {name: partial(start, tmp_path_factory, data_home) for name, start in AHEAD.items() if name in needed}
    )


# The runs beside the slow tests (tests/runs_ahead.py again): scenarios that mostly wait, on a thread that
# starts once the runs ahead are done; a test marked ``beside(NAME)`` reads one (``beside_result``).
# Measured on fresh clones: the suite took 701 s with them in line, 651-660 s beside (they slow the tests
# beside them: Chromium's 10.5 -> 20.2 s), 692 s beside at niceness 10 (slower still: tried, dropped).
BESIDE = {
    "classic_across_machines": across_machines.classic_across_machines,
    "deployment_across_machines": across_machines.deployment_across_machines,
    "ray_cluster_across_machines": across_machines.ray_cluster_across_machines,
}


@pytest.fixture(scope="session", autouse=True)
def runs_beside(
    request: pytest.FixtureRequest, runs_ahead: RunsAhead, tmp_path_factory: pytest.TempPathFactory, data_home: str
) -> Iterator[RunsAhead]:
    """Start the runs that the selected ``beside`` tests read, once the runs ahead are done; the machines
    they made are removed at the session's end."""
    needed = {m.args[0] for item in request.session.items for m in item.iter_markers("beside")}
    network = across_machines.SharedMachines()
    own_data = tmp_path_factory.mktemp("data_home_beside")  # Not the other tests' folder (the module says why).
    if needed:
        shutil.copytree(data_home, own_data, dirs_exist_ok=True)
    jobs = {
        name: partial(scenario, network, tmp_path_factory.mktemp(name), str(own_data))
        for name, scenario in BESIDE.items()
        if name in needed
    }
    runs = RunsAhead(jobs, after=runs_ahead.wait_all)
    yield runs
    runs.wait_all()
    network.close()


def beside_result(request: pytest.FixtureRequest, name: str) -> Any:
    """What the run beside ``name`` kept; the test skips with one line where its machines cannot be made."""
    runs: RunsAhead = request.getfixturevalue("runs_beside")
    try:
        return runs.result(name, lambda: pytest.fail(f"{name} is run beside: mark the test beside({name!r})"))
    except Unavailable as reason:
        pytest.skip(f"no network namespaces here: {reason}")


# A simulation of 100 clients sampling a tenth for each stage of each of 4 rounds, on the 5k rows.
# A tenth of them run the inner-product manipulation (colluding), against centered clipping, whose state
# (the last round's update) a resumed run must carry on from.
HUNDRED_CLIENTS = (
    *("--runtime", "simulation", "--clients", "100", "--fraction-fit", "0.1", "--fraction-evaluate", "0.1"),
    *("--strategy", "centeredclip", "--attack", "ipm", "--malicious", "0.1"),
)
HUNDRED_CLIENTS_ROUNDS = 4


@pytest.fixture(scope="session")
def hundred_clients_run(runs_ahead: RunsAhead, tmp_path_factory: pytest.TempPathFactory, data_home: str) -> FinishedRun:
    """``server.py`` with ``HUNDRED_CLIENTS``, uninterrupted, once a session: what a rerun or a resumed run must equal."""
    return runs_ahead.result("hundred_clients_run", lambda: start_hundred_clients_run(tmp_path_factory, data_home))


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
