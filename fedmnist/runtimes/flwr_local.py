"""``./run.sh flwr ...``: Flower's ``flwr`` CLI for this project; ``./run.sh flwr-stop`` ends its SuperLink.

``flwr run .`` on Flower's default connection (address ``:local:``) starts a SuperLink in
simulation mode and leaves it running, detached, so that the next run starts at once (Flower's
design). Through ``./run.sh flwr``, Flower's files (``config.toml``, the SuperLink's state and
log) live in the project's ``.flwr/`` instead of ``~/.flwr``, apps are not given a fresh
environment per run, and TensorFlow's and Ray's start-up notes stay off the console. ``./run.sh flwr-stop``
ends that SuperLink and the helpers it started, and nothing else: not another project's
SuperLink, not a SuperLink someone started by hand.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedmnist.common.cli import alive, is_start_up_noise
from fedmnist.common.project import PROJECT_ROOT
from fedmnist.runtimes.deployment import helper_pids, process_arguments, stage_app

STOP_SECONDS = 10.0  # How long the SuperLink may take to end its runs before it is killed.

# Set for flwr and everything it starts, unless already set.
QUIET_ENVIRONMENT = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # Else every run installs the app's dependencies (10 s).
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's C++ warnings, in every Ray worker (its absl lines: filtered).
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",  # Ray's FutureWarning about GPUs; there are none.
}


def flower_home() -> Path:
    """``FLWR_HOME`` when set, else the project's ``.flwr/``."""
    return Path(os.environ.get("FLWR_HOME") or PROJECT_ROOT / ".flwr")


def run_flwr(arguments: list[str]) -> int:
    """``flwr ARGUMENTS`` in the project's Flower home, its output without start-up noise; its status."""
    with tempfile.TemporaryDirectory(prefix="fedmnist-app-") as folder:
        return _run_flwr(_with_staged_app(arguments, Path(folder)))


def _with_staged_app(arguments: list[str], folder: Path) -> list[str]:
    """``flwr run PROJECT ...`` with a staged copy of the project's app files in ``folder`` instead.

    ``flwr run`` reads every file under the folder it is given, ``.venv`` included (4.3 s here),
    before it bundles the app's; the staged copy makes the same bundle (``deployment.stage_app``).
    """
    if len(arguments) < 2 or arguments[0] != "run" or Path(arguments[1]).resolve() != PROJECT_ROOT.resolve():
        return arguments
    return ["run", str(stage_app(PROJECT_ROOT, folder)), *arguments[2:]]


def _run_flwr(arguments: list[str]) -> int:
    bin_dir = Path(sys.executable).parent  # The venv's: flwr starts flower-superlink by name.
    environment = {
        **QUIET_ENVIRONMENT,
        **os.environ,
        "FLWR_HOME": str(flower_home()),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }  # Into a pipe, flwr's lines would otherwise come in bursts.
    with subprocess.Popen(
        [str(bin_dir / "flwr"), *arguments],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    ) as flwr:
        assert flwr.stdout is not None
        # Ctrl-C reaches flwr itself (one process group) and stops it: print its lines to the end.
        # (A handler, not SIG_IGN, which flwr would inherit.) SIGTERM is passed on.
        signal.signal(signal.SIGINT, lambda signum, frame: None)
        signal.signal(signal.SIGTERM, lambda signum, frame: flwr.terminate())
        for line in flwr.stdout:
            if not is_start_up_noise(line):
                sys.stdout.write(line)
                sys.stdout.flush()
    return flwr.returncode


def local_superlinks(home: Path) -> list[int]:
    """The SuperLinks ``flwr`` started for Flower home ``home``: they log to its ``local-superlink/``."""
    log_file = str(home / "local-superlink" / "superlink.log").encode()
    return [
        pid
        for pid, arguments in process_arguments()
        if any(a.endswith(b"flower-superlink") for a in arguments[:2]) and log_file in arguments
    ]


def stop_local_superlink(home: Path) -> str:
    """End the local SuperLink of ``home`` with its process group and helpers; what was done, in a line."""
    superlinks = local_superlinks(home)
    if not superlinks:
        return f"no local SuperLink of {home} is running"
    # Flower starts it in a session of its own, so its group holds what it started (simulations, apps);
    # its flower-superexec helpers are detached and name it as --parent-pid.
    ended = [*superlinks, *helper_pids(superlinks)]
    for pid in ended:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while _alive(ended) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in _alive(ended):
        _signal(pid, signal.SIGKILL)
    return f"stopped the local SuperLink of {home} (pid {', '.join(map(str, superlinks))}) and what it started"


def _signal(pid: int, signum: int) -> None:
    try:
        if os.getpgid(pid) == pid:  # A group leader: its group is what it started.
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if alive(pid)]


def main(argv: list[str]) -> None:
    """``./run.sh flwr ARGS`` or ``./run.sh flwr-stop``."""
    if argv[:1] == ["flwr-stop"]:
        if argv[1:]:
            raise SystemExit("error: ./run.sh flwr-stop takes no arguments")
        print(stop_local_superlink(flower_home()), flush=True)
        return
    sys.exit(run_flwr(argv[1:]))
