"""The dashboard's reading of run files, its API and its WebSockets, on run folders written here.

The folders are written with the server's own writers (``fedmnist.results.history``,
``fedmnist.results.checkpoint``), in the format a real run leaves; test_dashboard_live.py
runs real federations.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from socket import create_server
from typing import Any, cast

import numpy as np
import pytest
from fastapi.testclient import TestClient
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import connect
from websockets.typing import Origin

from conftest import free_port, run_script, wait_for_port
from fedmnist.dashboard.app import create_app
from fedmnist.dashboard.runs import find_runs, read_run
from fedmnist.dashboard.serve import origin_list, uvicorn_server
from fedmnist.results.checkpoint import Checkpoint, save_checkpoint
from fedmnist.results.history import history_from_records, save_history
from fedmnist.results.live_log import LiveLogWriter
from fedmnist.results.paths import RunPaths
from fedmnist.results.records import Evaluation, RoundRecord, Summary

INITIAL: Evaluation = {"centralized": {"accuracy": 0.1}, "loss_centralized": 2.3, "centralized_seconds": 0.01}
WEIGHTS = [np.arange(6, dtype="float32").reshape(2, 3), np.array([0.5, -1.0, 2.0], dtype="float32")]


def record(round_number: int, accuracy: float, *, failures: int = 0) -> RoundRecord:
    """A round record as RecordingStrategy writes it."""
    return {
        "round": round_number,
        "connected_clients": 2,
        "fit": {"accuracy": accuracy + 0.02, "loss": 0.3},
        "fit_results": 2 - failures,
        "fit_failures": failures,
        "rejected_updates": failures,
        "failure_reasons": ["update rejected: not finite"] * failures,
        "client_fit_seconds": 0.05,
        "centralized": {"accuracy": accuracy, "loss": 1 - accuracy},
        "loss_centralized": 1 - accuracy,
        "centralized_seconds": 0.01,
        "loss_distributed": 1.1 - accuracy,
        "evaluate": {"accuracy": accuracy - 0.01, "loss": 1.1 - accuracy},
        "evaluate_results": 2,
        "evaluate_failures": 0,
        "client_evaluate_seconds": 0.02,
        "seconds": 0.1,
        "coordination_seconds": 0.02,
    }


class RunWriter:
    """Writes a run's files the way the server does, step by step."""

    def __init__(self, root: Path, rounds: int = 3, started: str = "2026-11-27T10:00:00+00:00") -> None:
        self.paths = RunPaths(root, rounds)
        self.paths.check_writable()
        self.config = {"rounds": rounds, "clients": 2, "strategy": "fedavg", "model": "mlp", "partition": "iid"}
        self.records: list[RoundRecord] = []
        self.started = started
        self.log = LiveLogWriter(self.paths.round_log)
        self.log.start({"config": self.config, "data_source": "mnist-5k", "started": started, "resumed_after_round": 0})
        self.log.initial(INITIAL)

    def round(self, accuracy: float, **kwargs) -> None:
        self.records.append(record(len(self.records) + 1, accuracy, **kwargs))
        self.log.round(self.records[-1])
        save_checkpoint(
            self.paths.checkpoint,
            Checkpoint(
                round=len(self.records),
                weights=[w * len(self.records) for w in WEIGHTS],
                strategy_state={},
                records=self.records,
                initial=INITIAL,
                config=self.config,
                data_source="mnist-5k",
            ),
        )

    def connected(self, count: int) -> None:
        self.log.connected(count)

    def finish(self, **extra: Any) -> None:
        summary = {
            "config": self.config,
            "data_source": "mnist-5k",
            "finished": "2026-11-27T10:01:00+00:00",
            "initial": INITIAL,
            "rounds": self.records,
            "started": self.started,
            **extra,
        }
        save_history(self.paths, history_from_records(self.records, INITIAL), cast(Summary, summary))


def bump_mtime(path: Path, seconds: float) -> None:
    """Move a file's modification time ``seconds`` into the future, so write order is unambiguous."""
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + int(seconds * 1e9)))


# Finding and reading runs.


def test_runs_are_found_in_an_out_folder_its_sweeps_and_a_history_folder(tmp_path: Path) -> None:
    RunWriter(tmp_path, rounds=3)
    RunWriter(tmp_path / "sweep" / "quick" / "fedprox_iid", rounds=2)
    (tmp_path / "history" / "history_3.other.jsonl").write_text("{}\n")  # Not a run of its own.

    assert sorted(find_runs(tmp_path)) == ["history_3", "sweep/quick/fedprox_iid/history_2"]
    assert list(find_runs(tmp_path / "history")) == ["history_3"]
    assert find_runs(tmp_path / "sweep") == {}


def test_earlier_runs_kept_under_runs_are_listed_and_symlinks_out_are_not_followed(tmp_path: Path) -> None:
    RunWriter(tmp_path, rounds=3)
    RunWriter(tmp_path / "runs" / "2026-11-27T10-00-00_history_3", rounds=3)
    RunWriter(tmp_path / "runs" / "2026-11-27T11-00-00_history_2" / "sweep" / "quick" / "fedavg_iid", rounds=2)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    RunWriter(outside, rounds=5)
    (tmp_path / "runs" / "linked").mkdir()
    (tmp_path / "runs" / "linked" / "history").symlink_to(outside / "history")
    writer = RunWriter(tmp_path / "runs" / "file-link", rounds=4)
    writer.paths.round_log.unlink()
    writer.paths.round_log.symlink_to(outside / "history" / "history_5.jsonl")

    runs = find_runs(tmp_path)
    assert sorted(runs) == [
        "history_3",
        "runs/2026-11-27T10-00-00_history_3/history_3",
        "runs/2026-11-27T11-00-00_history_2/sweep/quick/fedavg_iid/history_2",
    ]
    assert "runs/file-link/history_4" not in runs  # Its only file points out of the folder.


def test_a_stopped_runs_partial_summary_is_read(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path)
    writer.round(0.8)
    summary: Summary = {
        "config": writer.config,
        "rounds": writer.records,
        "started": writer.started,
        "interrupted_after_round": 1,
    }
    save_history(writer.paths.as_partial(), history_from_records(writer.records, INITIAL), summary)
    assert read_run(find_runs(tmp_path)["history_3"]).status == "interrupted"


def test_a_run_is_waiting_then_running_then_finished(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path)
    run = find_runs(tmp_path)["history_3"]
    waiting = read_run(run)
    assert waiting.initial is not None
    assert (waiting.status, waiting.records, waiting.initial["centralized"]["accuracy"]) == ("waiting", [], 0.1)

    writer.round(0.8)
    assert read_run(run).status == "running"
    writer.round(0.9)
    writer.round(0.93)
    writer.finish()
    finished = read_run(run)
    assert finished.status == "finished" and [r["round"] for r in finished.records] == [1, 2, 3]
    assert finished.finished == "2026-11-27T10:01:00+00:00"


def test_an_interrupted_run_then_resumed_reads_as_running(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path)
    writer.round(0.8)
    writer.finish(interrupted_after_round=1)
    run = find_runs(tmp_path)["history_3"]
    assert read_run(run).status == "interrupted"

    # --resume appends its own header: the summary's start no longer matches the log's last one.
    writer.log.start(
        {"config": writer.config, "resumed_after_round": 1, "started": "2026-11-27T10:05:00+00:00"}, resume=True
    )
    resumed = read_run(run)
    assert resumed.status == "running" and resumed.started == "2026-11-27T10:00:00+00:00"


def test_a_summary_without_a_start_time_is_paired_with_the_log_by_modification_time(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path)
    writer.round(0.8)
    writer.finish(started=None)
    summary = json.loads(writer.paths.json.read_text())
    del summary["started"]  # As servers before the dashboard wrote it.
    writer.paths.json.write_text(json.dumps(summary))
    bump_mtime(writer.paths.json, 1)
    run = find_runs(tmp_path)["history_3"]
    assert read_run(run).status == "finished"
    bump_mtime(writer.paths.round_log, 2)  # The log written after the summary: a newer run.
    assert read_run(run).status == "running"


def test_clients_connecting_and_leaving_are_counted_before_and_between_rounds(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path)
    run = find_runs(tmp_path)["history_3"]
    assert read_run(run).connected_clients is None
    writer.connected(1)
    writer.connected(2)
    assert read_run(run).connected_clients == 2
    writer.round(0.8)  # Its record says 2 were connected as it began.
    writer.connected(1)
    assert read_run(run).connected_clients == 1


def test_a_torn_last_line_is_skipped_and_a_redone_round_counts_once(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path)
    writer.round(0.8)
    writer.log.round(record(1, 0.81))  # Redone after a resume.
    with open(writer.paths.round_log, "a") as handle:
        handle.write('{"round": 2, "fit": {"accur')  # The server is mid-write.
    records = read_run(find_runs(tmp_path)["history_3"]).records
    assert [(r["round"], r["centralized"]["accuracy"]) for r in records] == [(1, 0.81)]


def test_a_summary_from_an_earlier_run_does_not_hide_the_new_run(tmp_path: Path) -> None:
    old = RunWriter(tmp_path)
    old.round(0.8)
    old.finish()
    RunWriter(tmp_path, started="2026-11-27T11:00:00+00:00")  # Same --out and --rounds, later.
    snapshot = read_run(find_runs(tmp_path)["history_3"])
    assert (snapshot.status, snapshot.started, snapshot.records) == ("waiting", "2026-11-27T11:00:00+00:00", [])


# The HTTP API.


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tmp_path)) as test_client:
        yield test_client


def test_api_lists_runs_newest_first_with_their_latest_accuracy(tmp_path: Path, client: TestClient) -> None:
    sweep = RunWriter(tmp_path / "sweep" / "quick" / "fedavg_iid", rounds=2)
    sweep.round(0.7)
    sweep.finish()
    own = RunWriter(tmp_path)
    own.round(0.8)
    bump_mtime(own.paths.round_log, 1)

    runs = client.get("/api/runs").json()
    assert [(r["id"], r["status"], r["rounds_done"], r["rounds_total"]) for r in runs] == [
        ("history_3", "running", 1, 3),
        ("sweep/quick/fedavg_iid/history_2", "finished", 1, 2),
    ]
    assert runs[0]["accuracy_centralized"] == 0.8 and runs[0]["data_source"] == "mnist-5k"


def test_api_run_detail_has_config_round_zero_and_every_round(tmp_path: Path, client: TestClient) -> None:
    writer = RunWriter(tmp_path)
    writer.round(0.8)
    writer.round(0.9, failures=1)
    detail = client.get("/api/runs/history_3").json()
    assert detail["config"] == writer.config and detail["initial"] == {"accuracy": 0.1, "loss": 2.3}
    first, second = detail["rounds"]
    assert (first["round"], first["accuracy_centralized"], first["accuracy_distributed"]) == (
        1,
        0.8,
        pytest.approx(0.79),
    )
    assert (second["fit_results"], second["fit_failures"], second["rejected_updates"]) == (1, 1, 1)
    assert second["failure_reasons"] == ["update rejected: not finite"]
    assert second["connected_clients"] == 2 and second["fit_metrics"]["accuracy"] == pytest.approx(0.92)
    RunWriter(tmp_path / "sweep" / "quick" / "fedavg_iid", rounds=2)  # Ids with slashes reach the route whole.
    assert client.get("/api/runs/sweep/quick/fedavg_iid/history_2").json()["id"] == "sweep/quick/fedavg_iid/history_2"


def test_api_sends_nan_as_null(tmp_path: Path, client: TestClient) -> None:
    writer = RunWriter(tmp_path)
    writer.records.append({**record(1, 0.8), "loss_distributed": math.nan, "evaluate": {"accuracy": math.inf}})
    writer.log.round(writer.records[-1])  # json writes NaN and Infinity.
    (only,) = client.get("/api/runs/history_3").json()["rounds"]
    assert only["loss_distributed"] is None and only["accuracy_distributed"] is None


def test_unknown_run_and_path_are_404_json(tmp_path: Path, client: TestClient) -> None:
    RunWriter(tmp_path)
    response = client.get("/api/runs/history_7")
    assert response.status_code == 404 and response.json() == {
        "detail": "unknown run 'history_7'; GET /api/runs lists them"
    }
    assert client.get("/api/model/latest", params={"run": "nope"}).status_code == 404
    assert client.get("/api/nothing-here").json() == {"detail": "Not Found"}


def test_model_latest_as_json_arrays_with_shape_and_dtype(tmp_path: Path, client: TestClient) -> None:
    writer = RunWriter(tmp_path)
    no_weights = client.get("/api/model/latest")
    assert no_weights.status_code == 404 and "no weights yet" in no_weights.json()["detail"]
    writer.round(0.8)
    writer.round(0.9)
    document = client.get("/api/model/latest").json()
    assert (document["run_id"], document["round"], document["model"]) == ("history_3", 2, "mlp")
    assert [(t["shape"], t["dtype"]) for t in document["tensors"]] == [([2, 3], "float32"), ([3], "float32")]
    assert document["tensors"][0]["values"] == [[0, 2, 4], [6, 8, 10]]  # Round 2's weights: 2 x WEIGHTS.
    assert document["tensors"][1]["values"] == [1.0, -2.0, 4.0]


def test_model_latest_sends_a_diverged_models_nan_weights_as_null(tmp_path: Path, client: TestClient) -> None:
    writer = RunWriter(tmp_path)
    save_checkpoint(
        writer.paths.checkpoint,
        Checkpoint(
            round=1,
            weights=[np.array([1.0, np.nan, -np.inf], dtype="float32")],
            strategy_state={},
            records=[],
            initial=None,
            config=writer.config,
            data_source="mnist-5k",
        ),
    )
    assert client.get("/api/model/latest").json()["tensors"][0]["values"] == [1.0, None, None]


def test_model_latest_as_keras_file_built_while_running_then_the_runs_own(tmp_path: Path, client: TestClient) -> None:
    import keras

    from fedmnist.model.keras_model import build_model, save_model

    writer = RunWriter(tmp_path)
    real = build_model(1, "mlp").get_weights()  # The checkpoint must fit the run's model.
    save_checkpoint(
        writer.paths.checkpoint,
        Checkpoint(
            round=1,
            weights=real,
            strategy_state={},
            records=[record(1, 0.8)],
            initial=INITIAL,
            config=writer.config,
            data_source="mnist-5k",
        ),
    )
    response = client.get("/api/model/latest", params={"format": "keras"})
    assert response.status_code == 200 and "history_3-round1.keras" in response.headers["content-disposition"]
    built = tmp_path / "built.keras"
    built.write_bytes(response.content)
    for got, want in zip(keras.saving.load_model(built).get_weights(), real, strict=True):
        np.testing.assert_array_equal(got, want)

    final = build_model(2, "mlp")
    save_model(final, str(writer.paths.model))  # The run ended: its own model file is served.
    bump_mtime(writer.paths.model, 1)
    assert client.get("/api/model/latest?format=keras").content == writer.paths.model.read_bytes()


def test_run_files_are_listed_and_served_and_nothing_else_is(tmp_path: Path, client: TestClient) -> None:
    writer = RunWriter(tmp_path, rounds=3)
    writer.round(0.8)
    (tmp_path / "plots" / "accuracy.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "plots" / "leak.png").symlink_to("/etc/hostname")  # Points out of the folder.
    detail = client.get("/api/runs/history_3").json()
    assert detail["files"] == ["history/history_3.jsonl", "plots/accuracy.png"]
    picture = client.get("/api/file", params={"run": "history_3", "name": "plots/accuracy.png"})
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert picture.content == b"\x89PNG fake"
    for name in ("plots/leak.png", "../../etc/passwd", "checkpoints/checkpoint_3.npz"):
        response = client.get("/api/file", params={"run": "history_3", "name": name})
        assert response.status_code == 404 and "has no file" in response.json()["detail"], name


def test_round_records_carry_each_client_the_confusion_matrix_and_the_label_histograms(
    tmp_path: Path, client: TestClient
) -> None:
    writer = RunWriter(tmp_path, rounds=3)
    writer.records.append(
        {
            **record(1, 0.8),
            "confusion": [[1, 0], [2, 3]],
            "per_client": [
                {
                    "cid": "abcdef123",
                    "partition_id": 1,
                    "fit": {"examples": 450, "accuracy": 0.7},
                    "evaluate": {"accuracy": 0.75, "loss": 0.6},
                }
            ],
        }
    )
    writer.log.round(writer.records[-1])
    writer.finish(label_histograms=[[5, 1], [0, 4]])
    detail = client.get("/api/runs/history_3").json()
    assert detail["label_histograms"] == [[5, 1], [0, 4]]
    round_one = detail["rounds"][0]
    assert round_one["confusion"] == [[1, 0], [2, 3]]
    assert round_one["clients"] == [
        {
            "name": "client 1",
            "partition_id": 1,
            "examples": 450,
            "fit_accuracy": 0.7,
            "accuracy": 0.75,
            "loss": 0.6,
            **dict.fromkeys(("update_norm", "update_distance_to_median", "update_cosine_to_median", "defence")),
        }
    ]


def test_docs_describe_every_endpoint_with_typed_models_and_load_no_cdn(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/api/runs", "/api/runs/{run_id}", "/api/model/latest", "/api/file"}
    ok = {
        path: spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        for path in spec["paths"]
        if path != "/api/file"
    }
    assert "image/png" in spec["paths"]["/api/file"]["get"]["responses"]["200"]["content"]
    assert ok["/api/runs"]["items"]["$ref"].endswith("/RunInfo")
    assert ok["/api/runs/{run_id}"]["$ref"].endswith("/RunDetail")
    assert ok["/api/model/latest"]["$ref"].endswith("/ModelWeights")
    assert spec["paths"]["/api/runs/{run_id}"]["get"]["responses"]["404"]["content"]["application/json"]["schema"][
        "$ref"
    ].endswith("/ErrorResponse")
    assert "WS /ws" in spec["info"]["description"]
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "cdn" not in html.lower()
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css") if page == "/docs" else ("redoc.standalone.js",):
            assert f"/static-offline-docs/{asset}" in html
            assert client.get(f"/static-offline-docs/{asset}").status_code == 200


def test_page_and_its_scripts_are_served_from_the_package(client: TestClient) -> None:
    html = client.get("/").text
    assert '<div class="note" id="status">loading…</div>' in html  # Not "no run yet" while it loads.
    assert '<canvas id="accuracy-chart">' in html and "http" not in html.split("<body>")[0]
    for script in ("/static/vendor/chart.umd.min.js", "/static/dashboard.js", "/static/dashboard.css"):
        assert client.get(script).status_code == 200, script
    assert "Chart.js v4" in client.get("/static/vendor/chart.umd.min.js").text[:100]


def test_cors_allows_any_origin_by_default_and_only_listed_ones_when_given(tmp_path: Path, client: TestClient) -> None:
    RunWriter(tmp_path)
    assert (
        client.get("/api/runs", headers={"Origin": "http://elsewhere:3000"}).headers["access-control-allow-origin"]
        == "*"
    )
    with TestClient(create_app(tmp_path, cors_origins=["http://localhost:3000"])) as strict:
        allowed = strict.get("/api/runs", headers={"Origin": "http://localhost:3000"})
        assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert (
            "access-control-allow-origin" not in strict.get("/api/runs", headers={"Origin": "http://evil.test"}).headers
        )
        preflight = strict.options(
            "/api/runs", headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"}
        )
        assert preflight.status_code == 200


def test_cors_origins_flag_accepts_star_or_origins_only() -> None:
    import argparse

    assert origin_list("*") == "*"
    assert origin_list(" http://localhost:3000/, https://lab.example ") == "http://localhost:3000,https://lab.example"
    for bad in ("localhost:3000", "ftp://host", "http://host/path", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            origin_list(bad)


# WebSockets, on a real uvicorn server.


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """``ws://`` base URL of the dashboard for ``tmp_path``, in uvicorn on a free port."""
    port = free_port()
    app = create_app(tmp_path, cors_origins=["http://localhost:3000"], poll_seconds=0.05)
    server = uvicorn_server(app, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"ws://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def receive(socket, timeout: float = 5) -> dict:
    return json.loads(socket.recv(timeout=timeout))


def test_ws_sends_a_snapshot_then_a_round_event_per_round_then_the_status(tmp_path: Path, served: str) -> None:
    writer = RunWriter(tmp_path)
    writer.round(0.8)
    with connect(f"{served}/ws/events", proxy=None) as socket:
        snapshot = receive(socket)
        assert snapshot["type"] == "snapshot" and [r["round"] for r in snapshot["run"]["rounds"]] == [1]
        writer.connected(1)  # A client leaves...
        assert receive(socket) == {"type": "clients", "run_id": "history_3", "connected_clients": 1, "expected": 2}
        writer.connected(2)  # ...and comes back.
        assert receive(socket)["connected_clients"] == 2
        writer.round(0.9)
        writer.round(0.93)
        events = [receive(socket), receive(socket)]
        assert [(e["type"], e["record"]["round"], e["run_id"]) for e in events] == [
            ("round", 2, "history_3"),
            ("round", 3, "history_3"),
        ]
        assert events[1]["record"]["accuracy_centralized"] == 0.93 and events[1]["rounds_total"] == 3
        writer.finish()
        status = receive(socket)
        assert (status["type"], status["run"]["status"], status["run"]["rounds_done"]) == ("status", "finished", 3)


def test_ws_follows_the_newest_run_and_sends_a_snapshot_when_one_starts(tmp_path: Path, served: str) -> None:
    first = RunWriter(tmp_path / "sweep" / "quick" / "fedavg_iid", rounds=2)
    first.round(0.8)
    with connect(f"{served}/ws/events", proxy=None) as socket:
        assert receive(socket)["run"]["id"] == "sweep/quick/fedavg_iid/history_2"
        second = RunWriter(tmp_path / "sweep" / "quick" / "fedprox_iid", rounds=2)  # The sweep's next setting.
        bump_mtime(second.paths.round_log, 1)
        event = receive(socket)
        assert (event["type"], event["run"]["id"], event["run"]["status"]) == (
            "snapshot",
            "sweep/quick/fedprox_iid/history_2",
            "waiting",
        )


def test_ws_answers_malformed_messages_with_errors_and_stays_usable(tmp_path: Path, served: str) -> None:
    RunWriter(tmp_path)
    with connect(f"{served}/ws/events?run=history_9", proxy=None) as socket:
        assert receive(socket) == {"type": "error", "error": "unknown run 'history_9'; following the current run"}
        assert receive(socket)["run"]["id"] == "history_3"
        malformed: list[tuple[str | bytes, str]] = [
            ("{not json", "not JSON"),
            ("[1, 2]", 'expected a JSON object with a "type"'),
            ('{"type": "dance"}', "unknown message type 'dance'"),
            ('{"type": "subscribe", "run": "history_9"}', "unknown run 'history_9'"),
            (b"\x00\x01", "not bytes"),
            ("1" * 5000, "not usable JSON: ValueError"),
            ("[" * 100_000, "not usable JSON: RecursionError"),
        ]
        for message, error in malformed:
            socket.send(message)
            event = receive(socket)
            assert event["type"] == "error" and error in event["error"], (message, event)
        socket.send('{"type": "ping"}')
        assert receive(socket) == {"type": "pong"}
        socket.send('{"type": "subscribe", "run": "history_3"}')
        assert receive(socket)["run"]["id"] == "history_3"


def test_ws_closes_on_an_oversized_frame_and_refuses_huge_headers(served: str) -> None:
    from websockets.exceptions import ConnectionClosed

    with connect(f"{served}/ws/events", proxy=None) as socket:
        receive(socket)  # The snapshot.
        socket.send("x" * (1024 * 1024))  # 1 MB: over the 256 KB cap.
        with pytest.raises(ConnectionClosed) as closed:
            receive(socket)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # "Message too big".
    # The server answers 431/400 or drops the connection; it never reads 1 MB of headers.
    with (
        pytest.raises((WebSocketException, OSError)),
        connect(f"{served}/ws/events", proxy=None, additional_headers={"X-Big": "y" * (1024 * 1024)}) as socket,
    ):
        receive(socket)


def test_ws_closed_early_by_the_client_leaves_no_traceback(
    tmp_path: Path, served: str, capfd: pytest.CaptureFixture[str]
) -> None:
    import socket as sockets

    writer = RunWriter(tmp_path)
    for _ in range(5):  # Open, then vanish before reading anything: as a closed browser tab does.
        with connect(f"{served}/ws/events", proxy=None) as socket:
            socket.socket.shutdown(sockets.SHUT_RDWR)
        writer.connected(1)  # Something for the pusher to send to the dead socket.
    time.sleep(0.5)
    with connect(f"{served}/ws/events", proxy=None) as socket:  # Still serving.
        assert receive(socket)["type"] == "snapshot"
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out


def test_ws_echo_returns_text_and_bytes(served: str) -> None:
    with connect(f"{served}/ws/echo", proxy=None) as socket:
        socket.send("hello")
        assert socket.recv(timeout=5) == "hello"
        socket.send(b"\x00\xff")
        assert socket.recv(timeout=5) == b"\x00\xff"


def test_ws_refuses_a_browser_origin_cors_does_not_allow(served: str) -> None:
    with connect(f"{served}/ws/echo", proxy=None, origin=Origin("http://localhost:3000")) as socket:
        socket.send("ok")
        assert socket.recv(timeout=5) == "ok"
    for path in ("/ws/events", "/ws"):
        with pytest.raises(InvalidStatus, match="403"):
            connect(f"{served}{path}", proxy=None, origin=Origin("http://evil.test"))


# The command line.


def test_dashboard_command_reports_a_missing_folder_and_a_busy_port_in_one_line(tmp_path: Path) -> None:
    missing = run_script("-m", "fedmnist.dashboard", "--out", str(tmp_path / "nope"), timeout=60)
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: no such folder: {tmp_path / 'nope'}"
    port = free_port()
    with create_server(("127.0.0.1", port)):  # Something else listens there.
        result = run_script(
            "-m", "fedmnist.dashboard", "--out", str(tmp_path), "--dashboard-port", str(port), timeout=60
        )
    assert result.returncode == 2 and "port" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_dashboard_command_serves_a_finished_run(tmp_path: Path) -> None:
    import httpx

    from conftest import start_script

    writer = RunWriter(tmp_path)
    writer.round(0.8)
    writer.finish()
    port = free_port()
    process = start_script(
        "-m",
        "fedmnist.dashboard",
        "--out",
        str(tmp_path / "history"),
        "--dashboard-port",
        str(port),
        log=tmp_path / "dashboard.log",
    )
    try:
        wait_for_port(port, process, timeout=60)
        runs = httpx.get(f"http://127.0.0.1:{port}/api/runs", timeout=10).json()
        assert [(r["id"], r["status"]) for r in runs] == [("history_3", "finished")]
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert "dashboard: http://127.0.0.1:" in (tmp_path / "dashboard.log").read_text()


def test_the_config_card_shows_what_shaped_the_run_and_only_the_settings_it_used() -> None:
    from dataclasses import asdict

    from fedmnist.settings.server_settings import ServerSettings, settings_from
    from fedmnist.settings.shaping import shaping_settings

    core: dict[str, Any] = {
        "strategy": "fedprox",
        "model": "mlp",
        "dataset": "mnist-5k",
        "partition": "iid",
        "rounds": 5,
        "clients": 4,
        "min_clients": 2,
        "local_epochs": 1,
        "batch_size": 32,
        "learning_rate": 0.001,
        "seed": 42,
    }
    saved = asdict(ServerSettings(**{**core, "dp_noise": 0.5, "dp_clip": 0.1, "server_momentum": 0.5}))
    assert shaping_settings(settings_from({**saved, "a_setting_from_later": 1})) == {
        **core,
        "dp_noise": 0.5,
        "proximal_mu": 0.01,
        "dp_clip": 0.1,
        "dp_side": "server",
        "dp_delta": 1e-05,
    }
    plain = shaping_settings(ServerSettings(clients=3))  # FedAvg, no DP: no momentum, no mu, no DP rows.
    assert plain["min_clients"] == "2 (all but one)" and len(plain) == len(core)
