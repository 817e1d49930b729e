"""One app, three runtimes: the same run on the classic pair, the Simulation Runtime and the Deployment Runtime.

Also ``flwr run .`` of the project as a Flower App on a local simulation SuperLink.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, RecordDict
from flwr.client import NumPyClient
from flwr.common import Context, Scalar

from conftest import (
    HUNDRED_CLIENTS,
    HUNDRED_CLIENTS_ROUNDS,
    PROJECT_ROOT,
    SMALL_RUN,
    FinishedRun,
    SimulatedSweep,
    assert_the_strategy_trains_every_round,
    free_port,
    numbers,
    on_5k,
    read_until,
    run_script,
    start_watched,
    stream,
    wait_for_port,
)
from fedmnist.client.faults import FAULTS_VARIABLE
from fedmnist.client.flower_client import ClientCache
from fedmnist.data.sources import client_shares
from fedmnist.results.live_log import read_live_log
from fedmnist.results.paths import RunPaths
from fedmnist.results.records import read_summary
from fedmnist.results.run_lock import LOCK_FILE
from fedmnist.runtimes import flwr_local

pytestmark = pytest.mark.slow  # Real processes for whole runs: the full tier (./test.sh), not --fast.

pytest.importorskip("ray")


def result_files(out: Path) -> set[str]:
    """The run's outputs, by path relative to ``out``; TensorBoard's event files by folder (their names hold a time).

    Not its logs, nor the credentials a deployment makes (certs/, keys/), nor the lock a run holds on its
    folder (a sweep's is its own folder's): they are not results.
    """
    return {
        str((path.parent if "tensorboard" in path.parts else path).relative_to(out))
        for path in out.rglob("*")
        if path.is_file() and path.name != LOCK_FILE and not {"logs", "certs", "keys"} & set(path.parts)
    }


def simulate(out: Path, data_home: str, *args: str, timeout: float = 300, faults: str = "") -> dict:
    """``server.py --runtime simulation``; ``faults`` for the virtual clients (``FEDMNIST_FAULTS``, fedmnist.client.faults)."""
    done = run_script(
        "server.py",
        "--runtime",
        "simulation",
        *on_5k(out, data_home),
        *args,
        timeout=timeout,
        env={**os.environ, FAULTS_VARIABLE: faults},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return json.loads(next((out / "history").glob("history_*.json")).read_text())


def run_sh(out: Path, data_home: str, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [
            "bash",
            str(PROJECT_ROOT / "run.sh"),
            *args,
            "--data-home",
            data_home,
            "--no-dashboard",
            "--port",
            str(free_port()),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def assert_like_the_classic_run(summary: dict, out: Path, classic_run: FinishedRun, runtime: str) -> None:
    """The same rounds, clients and result files as the session's classic run (conftest), and a comparable accuracy."""
    assert classic_run.result.returncode == 0, classic_run.result.stderr[-3000:]
    classic = classic_run.out
    rounds = summary["rounds"]
    assert [(r["round"], r["fit_results"], r["evaluate_results"]) for r in rounds] == [(1, 3, 3), (2, 3, 3)]
    assert sorted(c["partition_id"] for c in rounds[-1]["per_client"]) == [0, 1, 2]
    classic_rounds = json.loads((classic / "history" / "history_2.json").read_text())["rounds"]
    # Comparable accuracy: the same data, model and training; the clients' order of work differs.
    assert abs(rounds[-1]["centralized"]["accuracy"] - classic_rounds[-1]["centralized"]["accuracy"]) < 0.05
    assert summary["config"]["runtime"] == runtime
    assert result_files(out) == result_files(classic)


def test_every_strategy_trains_every_round_on_the_simulation_runtime(simulated_strategies: SimulatedSweep) -> None:
    """The strategies grid as a simulation: each strategy aggregates every update of both rounds.

    All in one simulation: Ray and its workers started once, not once per setting.
    """
    from fedmnist.settings import defaults

    assert simulated_strategies.ray_starts == 1
    for strategy in defaults.STRATEGIES:
        folder = simulated_strategies.folder / f"{strategy}_iid"
        summary = json.loads((folder / "history" / "history_2.json").read_text())
        assert summary["config"]["runtime"] == "simulation"
        assert_the_strategy_trains_every_round(summary, strategy, clients=3, rounds=2)


def test_a_run_whose_rounds_accept_no_update_stops_with_one_error_and_saves_its_rounds(
    tmp_path: Path, data_home: str
) -> None:
    """Every client sends NaN: three rounds in a row accept nothing, and the run ends with status 2, not finished."""
    done = run_script(
        "server.py",
        "--runtime",
        "simulation",
        *on_5k(tmp_path, data_home),
        "--clients",
        "3",
        "--rounds",
        "6",
        timeout=300,
        env={**os.environ, FAULTS_VARIABLE: "0=nan,1=nan,2=nan"},
    )
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [done.stderr.strip().splitlines()[-1]] and "Traceback" not in done.stderr
    assert errors[0].startswith(
        "error: rounds 1-3 accepted no update, so the model stopped learning "
        "(rejected: array 0 has non-finite values (9x)). Stopped after round 3 of 6"
    )
    for n in (1, 2, 3):
        assert f"round {n}/6 | held-out acc" in done.stderr
        assert "0/3 clients: NO UPDATE ACCEPTED (3 rejected, 0 failed), model unchanged |" in done.stderr
    assert "round 4/6" not in done.stderr
    summary = json.loads((tmp_path / "history" / "history_6.partial.json").read_text())
    assert summary["interrupted_after_round"] == 3 and summary["stop_reason"].startswith("rounds 1-3 accepted no")
    assert [r["rejected_updates"] for r in summary["rounds"]] == [3, 3, 3]
    assert not (tmp_path / "history" / "history_6.json").exists()  # Never a finished run.


def test_a_virtual_client_that_crashes_is_gone_from_then_on_and_its_ray_worker_serves_the_others(
    tmp_path: Path, data_home: str
) -> None:
    """``crash-at-round:2`` on a ClientApp fails its messages from round 2 on; exiting would end a shared worker."""
    done = run_script(
        "server.py",
        "--runtime",
        "simulation",
        *on_5k(tmp_path, data_home),
        "--clients",
        "4",
        "--rounds",
        "3",
        "--model",
        "dense32",
        "--min-clients",
        "3",
        timeout=300,
        env={**os.environ, FAULTS_VARIABLE: "3=crash-at-round:2"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "worker died" not in done.stderr.lower() and "Traceback" not in done.stderr
    rounds = json.loads((tmp_path / "history" / "history_3.json").read_text())["rounds"]
    assert [(r["fit_results"], r["fit_failures"], r["evaluate_results"], r["rejected_updates"]) for r in rounds] == [
        (4, 0, 4, 0),
        (3, 1, 3, 0),
        (3, 1, 3, 0),
    ]
    assert all("fault injected: crashed at round 2" in r["failure_reasons"][0] for r in rounds[1:])
    assert [sorted(c["partition_id"] for c in r["per_client"] if "fit" in c) for r in rounds] == [
        [0, 1, 2, 3],
        [0, 1, 2],
        [0, 1, 2],
    ]
    import keras

    saved = keras.saving.load_model(tmp_path / "models" / "global_3.keras")  # --model dense32, as the server chose.
    assert saved.name == "mnist_dense32" and saved.input_shape == (None, 784)


def test_a_simulated_run_writes_what_a_classic_run_writes(
    simulated_strategies: SimulatedSweep, classic_run: FinishedRun
) -> None:
    out = simulated_strategies.folder / "fedavg_iid"
    summary = json.loads((out / "history" / "history_2.json").read_text())
    assert_like_the_classic_run(summary, out, classic_run, "simulation")


def simulate_drop_out(out: Path, data_home: str, *args: str) -> tuple[dict, list]:
    """One round of 5 clients in which client 2 fails its training: its summary and the model's weights."""
    import keras

    summary = simulate(out, data_home, "--clients", "5", "--rounds", "1", *args, faults="2=drop-at-round:1")
    (record,) = summary["rounds"]
    assert (record["fit_results"], record["fit_failures"], record["rejected_updates"]) == (4, 1, 0)
    assert "dropping out of round 1" in record["failure_reasons"][0]
    return summary, keras.saving.load_model(out / "models" / "global_1.keras").get_weights()


def test_secagg_gives_plain_fedavgs_model_and_tolerates_a_client_dropping_out_mid_protocol(
    tmp_path: Path, data_home: str
) -> None:
    """SecAgg+ (3 shares, threshold 2), 5 clients: the server never sees one update, yet gets plain FedAvg's model.

    Client 2 drops out after the key exchange, when its masked update is due:
    its neighbours' shares unmask the other four's sum without it. Each client
    quantizes its weighted update to 2**22 steps over [-8, 8] (Flower's
    defaults): 3.8e-6 a step. One round only: Adam turns any difference in a
    tiny gradient's sign into a full step, so later rounds drift apart by far
    more than the quantization (2e-3 after a second round, measured).
    """
    _, plain = simulate_drop_out(tmp_path / "plain", data_home, "--strategy", "fedavg")  # What auto is under SecAgg+.
    summary, secure = simulate_drop_out(tmp_path / "secagg", data_home, "--secagg")
    assert summary["config"]["secagg"] and summary["config"]["secagg_shares"] == 3
    assert [w.dtype for w in secure] == [w.dtype for w in plain]
    assert max(float(np.abs(a - b).max()) for a, b in zip(plain, secure)) < 1e-5


def test_a_deployment_run_with_secagg_stopped_by_ctrl_c_resumes_and_writes_what_a_classic_run_writes(
    tmp_path: Path, data_home: str, classic_run: FinishedRun
) -> None:
    """./run.sh --runtime deployment: a SuperLink, 3 SuperNodes, the ServerApp and ClientApp; all stopped after.

    With SecAgg+, whose four message exchanges a round run there too. Ctrl-C after round 1 reaches the
    whole process group: the ServerApp saves the completed round first, and --resume finishes the run,
    which then holds what the classic run holds.
    """
    import signal

    args = [
        *SMALL_RUN,
        "--runtime",
        "deployment",
        "--secagg",
        "--data-home",
        data_home,
        "--out",
        str(tmp_path),
        "--no-dashboard",
    ]
    launcher = start_watched(["bash", str(PROJECT_ROOT / "run.sh"), "--port", str(free_port()), *args])
    said = read_until(launcher, "round 1/2")
    os.killpg(launcher.pid, signal.SIGINT)  # As a terminal's Ctrl-C does.
    assert launcher.wait(timeout=90) != 0
    output = said + stream(launcher.stdout).read() + stream(launcher.stderr).read()
    assert "Flower Deployment Runtime: SuperLink on" in output and "Traceback" not in output, output
    # TLS and SuperNode authentication: the CA the SuperNodes trusted, the key pairs registered.
    assert "(TLS, SuperNode authentication), 3 registered SuperNodes" in output
    assert "Stopped after round 1 of 2" in output and "--resume" in output, output
    assert json.loads((tmp_path / "history" / "history_2.partial.json").read_text())["interrupted_after_round"] == 1
    left = flower_processes_of(data_home)
    assert not left, f"Ctrl-C left Flower processes running: {left}"

    done = subprocess.run(
        ["bash", str(PROJECT_ROOT / "run.sh"), "--port", str(free_port()), *args, "--resume"],
        capture_output=True,
        text=True,
        timeout=400,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert "resuming after round 1 of 2" in done.stdout and "round 2/2" in done.stdout
    assert "round 1/2" not in done.stdout  # Only its own rounds.
    summary = json.loads((tmp_path / "history" / "history_2.json").read_text())
    assert_like_the_classic_run(summary, tmp_path, classic_run, "deployment")  # No partial files left either.
    assert summary["config"]["secagg"]
    assert {p.name for p in (tmp_path / "logs").iterdir()} == {
        "server.log",
        "superlink.log",
        *(f"client_{i}.log" for i in range(3)),
    }
    assert not flower_processes_of(data_home), "the run left Flower processes running"
    assert (tmp_path / "certs" / "ca.pem").exists() and len(list((tmp_path / "keys").glob("supernode_*.pub"))) == 3


def test_a_supernode_whose_key_is_not_registered_is_refused(tmp_path: Path) -> None:
    """A SuperLink with SuperNode authentication (as ./run.sh --runtime deployment starts it) lets no stranger in."""
    from fedmnist.common.tls import generate_certificates
    from fedmnist.launch.node_keys import ensure_node_keys
    from fedmnist.runtimes import deployment

    generate_certificates(tmp_path / "certs", "localhost")
    ((private, _),) = ensure_node_keys(tmp_path / "keys", 1)  # Made, but never registered.
    home = tmp_path / "flwr"
    home.mkdir()
    environment = {**os.environ, **deployment.environment(home, None, None)}
    port = free_port()
    with open(tmp_path / "superlink.log", "wb") as log:
        superlink = subprocess.Popen(
            [sys.executable, *deployment.superlink_command(port, tmp_path / "certs")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    try:
        wait_for_port(port, superlink, timeout=60)
        # Its output to a file: Flower's detached helpers would hold a pipe open after it ends.
        with open(tmp_path / "supernode.log", "wb") as log:
            stranger = subprocess.Popen(
                [sys.executable, *deployment.supernode_command(port, free_port(), 0, 1, tmp_path / "certs", private)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
            )
        assert stranger.wait(timeout=120) != 0
    finally:
        superlink.terminate()
        superlink.wait(timeout=30)
    said = (tmp_path / "supernode.log").read_text()
    assert deployment.SUPERNODE_REFUSED in said and "Failed to activate SuperNode" in said, said[-2000:]


# SuperLink, SuperNode (the launcher's prompt_supernode.py), helpers, apps.
FLOWER_PROGRAMS = (b"fedmnist.client.warm_trainer", b"flower-", b"flwr-", b"prompt_supernode")
RAY_PROGRAMS = (b"ray::", b"raylet", b"gcs_server", b"ray/_private", b"ray/dashboard")  # Workers, Ray's own.


def flower_processes_of(marker: object, programs: tuple[bytes, ...] = FLOWER_PROGRAMS) -> list[str]:
    """Processes of ``programs`` whose command line or environment names ``marker``: "PID COMMAND LINE" each."""
    deadline = time.monotonic() + 10  # Flower's detached helpers notice their parent's end within seconds.
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                arguments = (entry / "cmdline").read_bytes()
                environment = (entry / "environ").read_bytes()
            except OSError:
                continue
            if any(program in arguments for program in programs) and str(marker).encode() in arguments + environment:
                command = arguments.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name} {command[:300]}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_flwr_run_runs_the_app_on_a_local_simulation_and_flwr_stop_ends_exactly_its_superlink(
    tmp_path: Path, data_home: str
) -> None:
    """``./run.sh flwr run .`` as docs/runtimes.md shows it, on the SuperLink flwr starts itself; then ``./run.sh flwr-stop``."""
    home, user_home = tmp_path / "flwr-home", tmp_path / "user"
    environment = {
        **os.environ,
        "FLWR_HOME": str(home),
        "HOME": str(user_home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
        "FEDMNIST_DATA_HOME": data_home,
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }
    for name in ("TF_CPP_MIN_LOG_LEVEL", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"):  # ./run.sh flwr sets these.
        environment.pop(name, None)
    out = tmp_path / "out"
    # Another SuperLink, as if another project's: flwr-stop must leave it running.
    (tmp_path / "other" / "local-superlink").mkdir(parents=True)
    other = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "flower-superlink"),
            "--insecure",
            "--simulation",
            "--port",
            str(free_port()),
            "--control-api-address",
            f"127.0.0.1:{free_port()}",
            "--fleet-api-address",
            f"127.0.0.1:{free_port()}",
            "--log-file",
            str(tmp_path / "other" / "local-superlink" / "superlink.log"),
        ],
        env={
            **environment,
            "FLWR_HOME": str(tmp_path / "other"),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        done = subprocess.run(
            [
                str(PROJECT_ROOT / "run.sh"),
                "flwr",
                "run",
                ".",
                "--stream",
                "--federation-config",
                "num-supernodes=2",
                "--run-config",
                f"rounds=2 clients=2 model='dense32' dataset='mnist-5k' out='{out}' data-home='{data_home}'",
            ],
            cwd=PROJECT_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=400,
            stdin=subprocess.DEVNULL,
        )
        running = flwr_local.local_superlinks(home)
        stopped = subprocess.run(
            [str(PROJECT_ROOT / "run.sh"), "flwr-stop"], env=environment, capture_output=True, text=True, timeout=60
        )
        left = flower_processes_of(home)
        assert other.poll() is None, "flwr-stop ended a SuperLink that is not this project's"
    finally:
        for pid in flwr_local.local_superlinks(home):
            os.kill(pid, 15)
        other.terminate()
        other.wait(timeout=30)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "round 2/2" in done.stdout, done.stdout[-3000:]
    for noise in ("oneDNN", "cpu_feature_guard", "FutureWarning"):
        assert noise not in done.stdout + done.stderr, noise
    summary = json.loads((out / "history" / "history_2.json").read_text())
    assert [(r["fit_results"], r["evaluate_results"]) for r in summary["rounds"]] == [(2, 2), (2, 2)]
    assert summary["config"]["runtime"] == "simulation" and summary["config"]["model"] == "dense32"
    assert summary["timings"]["client_warm_up_seconds"] > 0  # The ServerApp warms Flower's workers up too.
    assert (out / "history" / "history_2.pkl").is_file() and (out / "models" / "global_2.keras").is_file()
    assert len(running) == 1, "flwr run left no local SuperLink running (Flower's design) or started two"
    assert stopped.returncode == 0 and stopped.stdout.startswith("stopped the local SuperLink of"), stopped
    assert not left, "the local SuperLink or its helpers are still running"
    assert (home / "config.toml").is_file() and not (user_home / ".flwr").exists()
    again = subprocess.run(
        [str(PROJECT_ROOT / "run.sh"), "flwr-stop"], env=environment, capture_output=True, text=True, timeout=60
    )
    assert (again.returncode, again.stdout.strip()) == (0, f"no local SuperLink of {home} is running")


def test_flwr_files_go_to_the_projects_own_folder_unless_flwr_home_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLWR_HOME", raising=False)
    assert flwr_local.flower_home() == PROJECT_ROOT / ".flwr"
    monkeypatch.setenv("FLWR_HOME", "/somewhere")
    assert flwr_local.flower_home() == Path("/somewhere")


def clientapp_client(context: Context) -> NumPyClient:
    """The NumPyClient the ClientApp's client_fn makes for ``context``, as Flower's wrapper holds it."""
    from fedmnist.client import client_app

    return client_app.client_fn(context).numpy_client  # type: ignore[attr-defined]  # Set by NumPyClient.to_client().


def adam_steps(state: RecordDict) -> int:
    """Adam's step count a ClientApp client kept in its ``context.state``."""
    from fedmnist.client.flower_client import OPTIMIZER_STATE

    kept = state[OPTIMIZER_STATE]
    assert isinstance(kept, ArrayRecord)
    return int(kept.to_numpy_ndarrays()[0])  # Adam's iterations come first.


def test_a_worker_keeps_one_trainer_and_each_clients_rows(data_home: str) -> None:
    cache = ClientCache(data_home)
    settings: dict[str, Scalar] = {"dataset": "mnist-5k", "seed": 1, "partition": "iid", "model": "dense32"}
    first = cache.client(settings, 2, 10)
    assert cache.client(settings, 2, 10) is first  # Rows cut and converted once per process.
    other = cache.client(settings, 3, 10)
    assert other is not first and other.trainer is first.trainer  # One compiled Trainer per model.
    assert len(first.y_train) + len(first.y_val) == 400  # 4,000 rows in 10 shares.
    assert cache.client({**settings, "model": "mlp"}, 2, 10).trainer is not first.trainer


def test_a_worker_cuts_the_rows_once_for_all_its_clients(data_home: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower Datasets took 10 s to cut 60,000 rows into 100 shards:2 shares; doing it per client stalled rounds."""
    from fedmnist.client import flower_client
    from fedmnist.data.sources import client_data

    cuts: list[tuple[Any, ...]] = []

    def counted_cut(*args: Any) -> list[np.ndarray]:
        cuts.append(args)
        return client_shares(*args)

    monkeypatch.setattr(flower_client, "client_shares", counted_cut)
    cache = ClientCache(data_home)
    settings: dict[str, Scalar] = {"dataset": "mnist-5k", "seed": 1, "partition": "shards:2", "model": "dense32"}
    clients = [cache.client(settings, partition_id, 20) for partition_id in (0, 7, 19)]
    assert len(cuts) == 1  # Once for three clients.
    alone = client_data(cache.data("mnist-5k"), 7, 20, 1, partition="shards:2")  # Cut afresh: the same rows.
    assert np.array_equal(clients[1].y_train, alone.y_train) and np.array_equal(clients[1].y_val, alone.y_val)
    cache.client({**settings, "partition": "iid"}, 0, 20)
    assert len(cuts) == 2  # Another way of cutting is cut again.


def test_a_clientapp_client_keeps_its_adam_state_in_context_state(
    data_home: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With keep-optimizer, Adam's step count goes on across messages of one run, and starts afresh for another run."""
    from fedmnist.client import client_app

    monkeypatch.setattr(client_app._CACHE, "data_home", data_home)  # What FEDMNIST_DATA_HOME sets in a worker.
    context = Context(
        run_id=1, node_id=1, node_config={"partition-id": 2, "num-partitions": 10}, state=RecordDict(), run_config={}
    )
    config: dict[str, Scalar] = {
        "dataset": "mnist-5k",
        "seed": 1,
        "partition": "iid",
        "model": "dense32",
        "attack": "none",
        "malicious": 0.0,
        "run-id": "a",
        "local-epochs": 1,
        "batch-size": 32,
        "learning-rate": 0.001,
        "server-round": 1,
        "num-partitions": 10,
        "keep-optimizer": True,
    }
    weights = ClientCache().trainer("dense32", 1).get_weights()

    def steps_after_fit(run_id: str) -> int:
        clientapp_client(context).fit(weights, {**config, "run-id": run_id})  # A new client per message.
        return adam_steps(context.state)  # Adam's iterations come first.

    first = steps_after_fit("a")
    assert first == 12  # 360 training rows of 400 (10% validation), batches of 32.
    assert steps_after_fit("a") == 2 * first
    # Another client on the same worker between two of this client's messages: each keeps its own Adam.
    other = Context(
        run_id=1, node_id=2, node_config={"partition-id": 3, "num-partitions": 10}, state=RecordDict(), run_config={}
    )
    clientapp_client(other).fit(weights, config)
    assert adam_steps(other.state) == first
    assert steps_after_fit("a") == 3 * first
    assert steps_after_fit("b") == first


def test_by_default_each_fit_starts_adam_afresh_and_keeps_nothing(
    data_home: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FedAvg's clients: every round's local training starts a new Adam, even right after a client that kept its own."""
    from fedmnist.client import client_app

    monkeypatch.setattr(client_app._CACHE, "data_home", data_home)
    config: dict[str, Scalar] = {
        "dataset": "mnist-5k",
        "seed": 1,
        "partition": "iid",
        "model": "dense32",
        "attack": "none",
        "malicious": 0.0,
        "run-id": "c",
        "local-epochs": 1,
        "batch-size": 32,
        "learning-rate": 0.001,
        "server-round": 1,
        "keep-optimizer": False,
        "num-partitions": 10,
    }
    weights = ClientCache().trainer("dense32", 1).get_weights()
    trainer = client_app._CACHE.trainer("dense32", 1)
    keeper = Context(
        run_id=1, node_id=3, node_config={"partition-id": 4, "num-partitions": 10}, state=RecordDict(), run_config={}
    )
    clientapp_client(keeper).fit(weights, {**config, "keep-optimizer": True})
    for _ in range(2):  # Twice the same client: the second fit must not go on from the first.
        context = Context(
            run_id=1,
            node_id=1,
            node_config={"partition-id": 2, "num-partitions": 10},
            state=RecordDict(),
            run_config={},
        )
        clientapp_client(context).fit(weights, config)
        assert int(trainer.optimizer.iterations.numpy()) == 12  # One round's batches: 360 rows / 32.
        assert not context.state  # Nothing to keep between rounds.
    # The keeping client then gets its own Adam back, not the one the others reset.
    clientapp_client(keeper).fit(weights, {**config, "keep-optimizer": True})
    assert int(trainer.optimizer.iterations.numpy()) == 24


def test_a_warm_up_traces_the_model_ahead_and_leaves_the_training_as_it_was(data_home: str) -> None:
    """The simulation's warm-up message (fedmnist.runtimes.grid.warm_up_workers): round 1's work, done ahead, then forgotten."""
    from fedmnist.client.flower_client import WARM_UP, PartitionClient

    config: dict[str, Scalar] = {
        "dataset": "mnist-5k",
        "seed": 1,
        "partition": "iid",
        "model": "dense32",
        "attack": "none",
        "malicious": 0.0,
        "run-id": "w",
        "local-epochs": 2,
        "batch-size": 32,
        "learning-rate": 0.001,
        "server-round": 1,
        "num-partitions": 10,
        "keep-optimizer": True,
    }
    weights = ClientCache().trainer("dense32", 1).get_weights()
    warm_cache = ClientCache(data_home)
    warm = PartitionClient(2, 10, RecordDict(), warm_cache)
    assert warm.get_properties({**config, "server-round": 0, WARM_UP: True}) == {
        "partition_id": 2
    }  # What the server samples by.
    trainer = warm_cache.trainer("dense32", 1)
    assert trainer._train_epoch.experimental_get_tracing_count() == 1  # Traced: round 1 will not wait for it.
    assert trainer._evaluate.experimental_get_tracing_count() == 1
    assert warm_cache.warm_up_seconds > 0
    warm.get_properties({**config, WARM_UP: True})  # Again (another client on the same worker): nothing more to do.
    assert trainer._train_epoch.experimental_get_tracing_count() == 1

    cold = PartitionClient(2, 10, RecordDict(), ClientCache(data_home))
    cold_weights, cold_examples, cold_metrics = cold.fit(weights, config)
    warm_weights, warm_examples, warm_metrics = warm.fit(weights, config)
    assert cold_examples == warm_examples == 360
    for cold_array, warm_array in zip(cold_weights, warm_weights, strict=True):
        np.testing.assert_allclose(warm_array, cold_array, rtol=0, atol=1e-6)  # Same Adam, same shuffling.
    assert warm_metrics["loss"] == pytest.approx(cold_metrics["loss"], abs=1e-6)
    assert int(trainer.optimizer.iterations.numpy()) == 24  # 2 epochs of 12 batches: Adam started afresh.
    assert warm_metrics["warm_up_seconds"] == warm_cache.warm_up_seconds and "warm_up_seconds" not in cold_metrics


def test_sigterm_on_a_simulation_saves_its_rounds_stops_ray_and_the_resumed_run_equals_an_uninterrupted_one(
    tmp_path: Path, data_home: str, hundred_clients_run: FinishedRun
) -> None:
    """SIGTERM to ./run.sh mid-round (a CI timeout, ``kill``), which stops the server with SIGTERM in turn.

    One sentence, no traceback, no round recorded after the stop, no Ray process left. Before,
    Flower shut Ray down under the round in flight and printed its workers' tracebacks; and Ray's
    failure-signal handler took the server's SIGTERM and had it killed 3 s later, while it was saving.
    ``--resume`` then finishes the run, which holds what the same run uninterrupted holds (the
    session's ``hundred_clients_run``), bit for bit: rounds sampled, trained and summed alike.
    """
    import signal

    last = HUNDRED_CLIENTS_ROUNDS
    args = [str(PROJECT_ROOT / "run.sh"), *HUNDRED_CLIENTS, "--rounds", str(last), "--no-dashboard"]
    args += on_5k(tmp_path, data_home)
    launcher = start_watched(["bash", *args], merge_stderr=True)
    read_until(launcher, f"round 1/{last}")
    os.kill(launcher.pid, signal.SIGTERM)  # Round 2 is under way: its 10 clients' messages are in flight.
    assert launcher.wait(timeout=120) == 130
    output = stream(launcher.stdout).read()
    stopped = json.loads((tmp_path / "history" / f"history_{last}.partial.json").read_text())["interrupted_after_round"]
    assert f"Stopped after round {stopped} of {last}" in output and "Traceback" not in output, output
    assert "SIGTERM received" not in output, output  # Ray's report of the signal it had taken.
    assert (tmp_path / "plots" / "accuracy.png").exists()  # Saving went on to the end.
    assert stopped < last and [
        r["round"] for r in read_live_log(tmp_path / "history" / f"history_{last}.jsonl").records
    ] == list(range(1, stopped + 1))  # Flower's thread recorded no round after the stop.
    assert not flower_processes_of(data_home, RAY_PROGRAMS), "Ctrl-C left Ray processes running"

    done = subprocess.run(
        ["bash", *args, "--resume"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    resumed = read_summary(RunPaths(tmp_path, last).json)
    uninterrupted = read_summary(RunPaths(hundred_clients_run.out, last).json)
    assert [r["round"] for r in resumed["rounds"]] == list(range(1, last + 1))
    assert [numbers(r) for r in resumed["rounds"]] == [numbers(r) for r in uninterrupted["rounds"]]
    assert resumed["weights_checksum"] == uninterrupted["weights_checksum"]


def test_a_stop_during_a_long_round_ends_the_simulation_within_the_launchers_grace(
    tmp_path: Path, data_home: str
) -> None:
    """A round of about a minute in flight (cnn-paper at E=5 takes two): the server must not wait for it.

    Before, it joined Flower's thread until the round ended; ./run.sh killed it after its 30 s of
    grace, and Ray's agents were left running.
    """
    import signal

    from fedmnist.launch.launcher import SERVER_STOP_SECONDS

    args = [
        sys.executable,
        str(PROJECT_ROOT / "server.py"),
        "--runtime",
        "simulation",
        "--clients",
        "2",
        "--rounds",
        "2",
        "--local-epochs",
        "100",
        "--batch-size",
        "10",
        *on_5k(tmp_path, data_home),
    ]
    server = start_watched(args, merge_stderr=True)
    read_until(server, "starting global model")
    time.sleep(3)  # Round 1 is under way: 2 x 18,000 steps of 10 images.
    stopped = time.monotonic()
    os.kill(server.pid, signal.SIGTERM)
    assert server.wait(timeout=120) == 130
    took = time.monotonic() - stopped
    output = stream(server.stdout).read()
    assert took < SERVER_STOP_SECONDS - 5, f"the stop took {took:.1f} s:\n{output}"
    assert "nothing to save" in output and "Traceback" not in output, output
    assert not flower_processes_of(data_home, RAY_PROGRAMS), "the stop left Ray processes running"


def test_a_stop_while_ray_starts_ends_the_run_without_starting_flowers_simulation(
    tmp_path: Path, data_home: str
) -> None:
    """SIGTERM seconds into a simulation, before Ray is up (6-7 s here): the rounds must never start.

    Flower's simulation is imported in a thread of its own while Ray starts; before, that thread
    went on to start the simulation after the stop, and the server took 20 s to end instead of 7.
    """
    import signal

    args = [
        sys.executable,
        str(PROJECT_ROOT / "server.py"),
        "--runtime",
        "simulation",
        "--clients",
        "10",
        "--rounds",
        "2",
        *on_5k(tmp_path, data_home),
    ]
    server = start_watched(args, merge_stderr=True)
    for line in stream(server.stdout):
        if line.startswith("INFO    data:"):  # Ray is starting.
            break
    time.sleep(1.5)  # The server is waiting for Ray now.
    os.kill(server.pid, signal.SIGTERM)
    assert server.wait(timeout=60) == 130
    output = stream(server.stdout).read()
    assert "nothing to save" in output and "Traceback" not in output, output
    assert "run_simulation" not in output and "round 1" not in output, output  # Flower's simulation never started.
    assert not flower_processes_of(data_home, RAY_PROGRAMS), "the stop left Ray processes running"


def test_client_side_dp_with_secagg_clips_with_flowers_mod_and_a_round_secagg_gives_up_spends_nothing(
    tmp_path: Path, data_home: str
) -> None:
    """The ClientApp clips with Flower's fixedclipping_mod, then SecAgg+ masks the clipped update, weighed 1.

    In round 2 three of the four clients drop out: too few remain to unmask
    the sum, so no update reaches the model, the round says why, and no
    privacy is spent on it. Round 3 trains again.
    """
    summary = simulate(
        tmp_path,
        data_home,
        "--clients",
        "4",
        "--rounds",
        "3",
        "--model",
        "dense32",
        "--dp-noise",
        "0.1",
        "--dp-clip",
        "0.05",
        "--dp-side",
        "client",
        "--secagg",
        faults="1=drop-at-round:2,2=drop-at-round:2,3=drop-at-round:2",
    )
    rounds = summary["rounds"]
    assert [(r["fit_results"], r["fit_failures"], r["rejected_updates"]) for r in rounds] == [
        (4, 0, 0),
        (0, 4, 0),
        (4, 0, 0),
    ], rounds[0]["failure_reasons"]
    assert "SecAgg+ gave up on the round" in rounds[1]["failure_reasons"][0]
    assert [r["privacy"]["releases"] for r in rounds] == [1, 1, 2] and rounds[-1]["privacy"]["clipping"] == "client"
    assert summary["privacy"]["epsilon"] == rounds[-1]["privacy"]["epsilon"] > rounds[0]["privacy"]["epsilon"]
