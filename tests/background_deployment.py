"""The Deployment Runtime's SecAgg+ run, stopped with Ctrl-C and resumed, in a thread beside the other tests.

Its two launches take about 75 s here, most of it waiting for Flower's processes, so the session
starts it with its first test (conftest's ``background_deployment``, only when the deployment test
is selected) and the test asserts on what it saw. The run has a data home of its own: its processes
are told apart from every other test's by it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmnist.common.ports import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEST_NAME = "test_a_deployment_run_with_secagg_stopped_by_ctrl_c_resumes_and_writes_what_a_classic_run_writes"
SMALL_RUN = ("--clients", "3", "--rounds", "2", "--dataset", "mnist-5k")
# SuperLink, SuperNode (the launcher's prompt_supernode.py), helpers, apps.
FLOWER_PROGRAMS = (b"flower-", b"flwr-", b"prompt_supernode")
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


@dataclass
class StoppedAndResumed:
    """What the run showed: the first launch until Ctrl-C after round 1, then the ``--resume`` launch."""

    out: Path  # The results folder.
    data_home: Path  # Its own: in every one of its processes' environment.
    stopped_status: int
    stopped_output: str
    partial: dict[str, Any]  # history_2.partial.json after the stop.
    left_after_stop: list[str]  # Flower processes still running after the stop.
    resumed: subprocess.CompletedProcess
    left_after_end: list[str]


def start(out: Path, data_home: str) -> Future[StoppedAndResumed]:
    """Run the scenario in a thread of its own; the future holds what it saw, or its error."""
    seen: Future[StoppedAndResumed] = Future()

    def scenario() -> None:
        try:
            seen.set_result(_stop_and_resume(out, data_home))
        except BaseException as error:  # noqa: BLE001  The test raises it.
            seen.set_exception(error)

    threading.Thread(target=scenario, name="deployment-run", daemon=True).start()
    return seen


def _stop_and_resume(out: Path, data_home: str) -> StoppedAndResumed:
    own_home = out.parent / f"{out.name}-data"
    shutil.copytree(data_home, own_home)
    args = [*SMALL_RUN, "--runtime", "deployment", "--secagg", "--data-home", str(own_home)]
    args += ["--out", str(out), "--no-dashboard"]
    launcher = subprocess.Popen(
        ["bash", str(PROJECT_ROOT / "run.sh"), "--port", str(free_port()), *args],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Its own group, which Ctrl-C reaches as a terminal's does.
    )
    assert launcher.stdout is not None
    said = []
    for line in launcher.stdout:
        said.append(line)
        if "round 1/2" in line:
            break
    try:
        os.killpg(launcher.pid, signal.SIGINT)  # As a terminal's Ctrl-C does.
    except ProcessLookupError:  # It ended before round 1: the test shows its output.
        pass
    status = launcher.wait(timeout=120)
    said.append(launcher.stdout.read())
    partial = json.loads((out / "history" / "history_2.partial.json").read_text())
    left_after_stop = flower_processes_of(own_home)
    resumed = subprocess.run(
        ["bash", str(PROJECT_ROOT / "run.sh"), "--port", str(free_port()), *args, "--resume"],
        capture_output=True,
        text=True,
        timeout=400,
        stdin=subprocess.DEVNULL,
    )
    return StoppedAndResumed(
        out, own_home, status, "".join(said), partial, left_after_stop, resumed, flower_processes_of(own_home)
    )
