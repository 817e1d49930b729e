"""Saving and reading results: History pickle/JSON, the live round log, atomic writes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from flwr.server.history import History

from fedmnist.common.atomic import write_atomic, write_text_atomic
from fedmnist.common.errors import UserError
from fedmnist.results.history import RunPaths, history_from_dict, history_to_dict, load_history, save_history
from fedmnist.results.live_log import LiveLogWriter, read_live_log


def sample_history() -> History:
    history = History()
    history.add_loss_centralized(0, 2.3)
    for server_round, accuracy in ((1, 0.8), (2, 0.9)):
        history.add_loss_distributed(server_round, 1 - accuracy)
        history.add_loss_centralized(server_round, 1 - accuracy)
        history.add_metrics_distributed(server_round, {"accuracy": accuracy, "loss": 1 - accuracy})
        history.add_metrics_centralized(server_round, {"accuracy": accuracy})
        history.add_metrics_distributed_fit(server_round, {"accuracy": accuracy - 0.05})
    return history


def test_paths_follow_the_rounds(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path, 40)
    assert paths.pickle == tmp_path / "history" / "history_40.pkl"
    assert paths.json.name == "history_40.json" and paths.round_log.name == "history_40.jsonl"
    assert paths.model == tmp_path / "models" / "global_40.keras"


def test_pickle_and_json_round_trip(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path, 2)
    history = sample_history()
    save_history(paths, history, {"config": {"rounds": 2}, "data_source": "mnist-5k"})
    from_pickle, summary = load_history(paths.pickle)
    from_json, _ = load_history(paths.json)
    for loaded in (from_pickle, from_json):
        assert loaded.metrics_distributed["accuracy"] == [(1, 0.8), (2, 0.9)]
        assert loaded.losses_centralized == history.losses_centralized
        assert loaded.metrics_distributed_fit == history.metrics_distributed_fit
    assert summary["data_source"] == "mnist-5k"
    assert json.loads(paths.json.read_text())["history"]["metrics_centralized"]["accuracy"] == [[1, 0.8], [2, 0.9]]


def test_history_dict_round_trip_is_exact() -> None:
    history = sample_history()
    assert history_to_dict(history_from_dict(history_to_dict(history))) == history_to_dict(history)


def test_load_history_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "history_2.pkl"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="cannot read history"):
        load_history(bad)
    with pytest.raises(UserError, match="cannot read history"):
        load_history(tmp_path / "missing.pkl")


def test_corrupt_summary_beside_a_pickle_is_a_user_error(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path, 2)
    save_history(paths, sample_history(), {})
    paths.json.write_text('{"config": ')  # Cut short.
    with pytest.raises(UserError, match="cannot read history"):
        load_history(paths.pickle)


def test_plots_tool_never_unpickles_a_history(tmp_path: Path) -> None:
    # A crafted pickle would run code when loaded: the tools read the JSON beside it instead.
    import os

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    paths = RunPaths(tmp_path, 2)
    save_history(paths, sample_history(), {})
    paths.pickle.write_bytes(pickle.dumps(Payload()))
    history, _ = load_history(paths.pickle)
    assert history.metrics_distributed["accuracy"] == [(1, 0.8), (2, 0.9)]  # From the JSON.
    paths.json.unlink()
    with pytest.raises(UserError, match="never unpickles"):
        load_history(paths.pickle)
    assert not marker.exists()


def test_the_live_log_reads_back_what_its_writer_wrote_and_skips_a_torn_last_line(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path, 3)
    writer = LiveLogWriter(paths.round_log)
    writer.start({"config": {"rounds": 3}, "started": "2026-11-29T10:00:00+00:00", "data_source": "mnist-5k"})
    writer.connected(2)
    writer.initial({"centralized": {"accuracy": 0.1}})
    writer.round({"round": 1, "seconds": 0.5, "connected_clients": 3})
    writer.start({"config": {"rounds": 3}, "started": "2026-11-29T11:00:00+00:00"}, resume=True)
    with open(paths.round_log, "a") as handle:
        handle.write('{"round": 2, "seco')  # A crash in the middle of a write.
    live = read_live_log(paths.round_log)
    assert live.records == [{"round": 1, "seconds": 0.5, "connected_clients": 3}]
    assert (live.header["data_source"], live.last_started) == ("mnist-5k", "2026-11-29T11:00:00+00:00")
    assert (live.initial, live.connected_clients) == ({"centralized": {"accuracy": 0.1}}, 3)
    writer.start({"config": {"rounds": 3}})  # A new run's log starts afresh.
    assert read_live_log(paths.round_log).records == [] and read_live_log(tmp_path / "missing.jsonl").header == {}


def test_failed_atomic_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "history_40.json"
    write_text_atomic(target, "old results")

    def crash_half_way(handle) -> None:
        handle.write(b"new resu")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(target, crash_half_way)
    assert target.read_text() == "old results"
    assert [p.name for p in tmp_path.iterdir()] == ["history_40.json"]  # No temporary left behind.


def test_unwritable_output_is_a_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(UserError, match="cannot write results"):
        RunPaths(blocker, 2).check_writable()
