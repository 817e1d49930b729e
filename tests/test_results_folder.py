"""One run per results folder, earlier runs kept, files written whole and with the umask's mode."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from conftest import free_port, on_5k, run_script, start_script, stream, wait_for_port
from fedmnist.common.atomic import write_atomic, write_text_atomic
from fedmnist.launch.flags import parse_args
from fedmnist.results.archive import archive_earlier_results
from fedmnist.results.run_lock import ResultsInUse, lock_results


def test_result_files_get_the_mode_the_umask_gives(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "history_2.json", "{}")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644  # mkstemp alone made it 0600.


def test_secrets_are_owner_only_while_written_not_only_after_the_move(tmp_path: Path) -> None:
    from fedmnist.common.tls import KEY_FILE, generate_certificates
    from fedmnist.launch.node_keys import ensure_node_keys

    modes_while_written = []
    previous = os.umask(0o022)
    try:
        write_atomic(
            tmp_path / "key", lambda handle: modes_while_written.append(os.fstat(handle.fileno()).st_mode), secret=True
        )
        ((private, public),) = ensure_node_keys(tmp_path / "keys", 1)
        generate_certificates(tmp_path / "certs", "localhost")
    finally:
        os.umask(previous)
    assert [mode & 0o777 for mode in modes_while_written] == [0o600]
    assert (tmp_path / "key").stat().st_mode & 0o777 == 0o600
    assert private.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "certs" / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert public.stat().st_mode & 0o777 == 0o644  # Public halves are meant to be shared.


def test_an_earlier_run_is_moved_to_runs_and_stale_temporaries_are_removed(tmp_path: Path) -> None:
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "history_40.jsonl").write_text(
        json.dumps({"config": {}, "started": "2026-11-29T13:55:02+00:00"}) + "\n"
    )
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "accuracy.png").write_bytes(b"png")
    (tmp_path / "checkpoints").mkdir()
    stale = tmp_path / "checkpoints" / ".checkpoint_40.npz.tmp-abc123.npz"  # Left by a kill -9 mid-write.
    stale.write_bytes(b"half")

    target = archive_earlier_results(tmp_path)
    assert target == tmp_path / "runs" / "2026-11-29T13-55-02_history_40"
    assert (target / "history" / "history_40.jsonl").exists() and (target / "plots" / "accuracy.png").exists()
    assert not (tmp_path / "history").exists() and not stale.exists()
    assert not (target / "checkpoints").exists()  # Held only the stale temporary file.
    assert archive_earlier_results(tmp_path) is None  # Nothing left to keep.


def test_a_held_lock_refuses_a_second_run_and_a_dead_one_does_not(tmp_path: Path) -> None:
    import subprocess
    import sys

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from fedmnist.results.run_lock import lock_results; "
                f"lock_results({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert stream(holder.stdout).readline().strip() == "held"
    with pytest.raises(ResultsInUse, match=rf"is in use by another run \(pid {holder.pid}, started "):
        lock_results(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock_results(tmp_path)  # The kernel released it with the process: nothing stuck.


def test_sweep_without_grid_runs_the_documented_grid() -> None:
    assert parse_args(["sweep"]).grid == "heterogeneity"
    assert parse_args([]).grid is None


@pytest.mark.slow
def test_a_second_server_on_a_live_runs_folder_is_refused_and_later_runs_keep_earlier_results(
    tmp_path: Path, data_home: str
) -> None:
    common = ["--dataset", "mnist-5k", "--data-home", data_home, "--out", str(tmp_path)]
    port = free_port()
    first = start_script("server.py", "--port", str(port), "--rounds", "3", *common, log=tmp_path.parent / "first.log")
    wait_for_port(port, first)  # Listening: it holds the lock and has written its live log.
    second = run_script("server.py", "--port", str(free_port()), "--rounds", "3", *common)
    assert second.returncode == 2 and f"is in use by another run (pid {first.pid}" in second.stderr, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    log = tmp_path / "history" / "history_3.jsonl"
    started = json.loads(log.read_text().splitlines()[0])["started"]
    first.send_signal(signal.SIGKILL)  # Dies holding the lock.
    first.wait()

    third = run_script("server.py", "--port", str(free_port()), "--rounds", "3", "--client-timeout", "1", *common)
    assert third.returncode == 2 and "only 0 of 3 clients connected" in third.stderr, third.stderr
    kept = tmp_path / "runs" / f"{started.replace(':', '-').split('+')[0]}_history_3" / "history" / "history_3.jsonl"
    assert json.loads(kept.read_text().splitlines()[0])["started"] == started  # The first run's log, kept.
    assert f"were moved to {kept.parent.parent}" in third.stderr


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 64 KiB tmpfs, filled up: writes fail with ENOSPC as on a full disk (needs root to mount)."""
    import subprocess

    mount = tmp_path / "full"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_leaves_the_old_file_and_no_temporary(full_disk: Path) -> None:
    import errno

    target = full_disk / "history_2.json"
    write_text_atomic(target, "old results")
    filler = full_disk / "filler"
    with pytest.raises(OSError):
        filler.write_bytes(b"x" * 128 * 1024)  # Fill what is left.
    with pytest.raises(OSError) as error:
        write_text_atomic(target, "new results " * 10_000)
    assert error.value.errno == errno.ENOSPC
    assert target.read_text() == "old results"
    assert sorted(path.name for path in full_disk.iterdir()) == ["filler", "history_2.json"]


@pytest.mark.slow
def test_a_disk_that_fills_during_a_run_ends_it_with_one_line_and_no_half_files(
    full_disk: Path, data_home: str, tmp_path: Path
) -> None:
    # The first checkpoint (about 400 KB) does not fit: the old server hung for ever here.
    port = free_port()
    server = start_script(
        "server.py",
        "--port",
        str(port),
        "--rounds",
        "3",
        "--clients",
        "2",
        *on_5k(full_disk, data_home),
        log=tmp_path / "server.log",
    )
    wait_for_port(port, server)
    clients = start_script(
        "tests/hostile_client.py", f"127.0.0.1:{port}", "honest", "honest", log=tmp_path / "clients.log"
    )
    assert server.wait(timeout=120) == 2
    clients.kill()
    output = (tmp_path / "server.log").read_text()
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1 and "round 1 failed: its checkpoint could not be written (No space left on device" in errors[0]
    )
    assert "Traceback" not in output
    leftovers = [path for path in full_disk.rglob(".*") if path.name != ".fedmnist.lock"]
    assert leftovers == []  # No temporary file left behind.


def test_run_sh_refuses_a_folder_a_live_run_uses_before_touching_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import time; from fedmnist.results.run_lock import lock_results; "
                f"lock_results({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    try:
        assert stream(holder.stdout).readline().strip() == "held"
        result = subprocess.run(
            ["bash", str(root / "run.sh"), "--out", str(tmp_path), "--port", str(free_port()), "--no-dashboard"],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
    finally:
        holder.kill()
    assert result.returncode == 2 and f"is in use by another run (pid {holder.pid}" in result.stderr, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == [".fedmnist.lock"]  # No logs/, nothing moved.


def test_server_outside_its_environment_says_so_in_one_line() -> None:
    import subprocess
    import sys

    # -S: no site-packages, as with a plain python3 that has none of the project's packages.
    result = subprocess.run(
        [sys.executable, "-S", "server.py", "--rounds", "3"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.startswith("error: server.py needs the project's environment")
        and ".venv/bin/python" in result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1
