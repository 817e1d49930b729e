"""The cycle collector: paused while server.py and client.py start, then kept off what start-up built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import PROJECT_ROOT


def python(code: str, cwd: Path = PROJECT_ROOT) -> str:
    """Run ``code`` in a fresh interpreter (the collector is per process) and return what it printed."""
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_start_up_done_freezes_what_start_up_built_and_collects_again_from_then_on() -> None:
    printed = python(
        """
import gc
from fedmnist.common.garbage import pause_collection, start_up_done
pause_collection()
assert not gc.isenabled()
kept = [[] for _ in range(1000)]  # What start-up builds, that lives as long as the process.
start_up_done()
assert gc.isenabled() and gc.get_freeze_count() >= 1000
cycle = []
cycle.append(cycle)  # Garbage of a later round: the collector still frees it.
del cycle
print(gc.collect() >= 1, gc.get_freeze_count() >= 1000)
"""
    )
    assert printed == "True True"


def test_start_up_done_leaves_a_process_that_did_not_pause_as_it_was() -> None:
    assert (
        python(
            "import gc\nfrom fedmnist.common.garbage import start_up_done\nstart_up_done()\n"
            "print(gc.isenabled(), gc.get_freeze_count())"
        )
        == "True 0"
    )


def test_server_py_and_client_py_start_with_the_collector_paused(tmp_path: Path) -> None:
    """Each entry point's start-up (the TensorFlow import) runs paused: reported from where the run begins."""
    server = python(
        f"""
import gc, os, sys
import server, fedmnist.server.run
def run_server(*args):
    print("server paused:", not gc.isenabled(), flush=True)
    os._exit(0)
fedmnist.server.run.run_server = run_server
server.main(["--out", {str(tmp_path)!r}, "--port", "1"])
"""
    )
    client = python(
        """
import gc, os
import client, fedmnist.client.classic
def make_client(**kwargs):
    print("client paused:", not gc.isenabled(), flush=True)
    os._exit(0)
fedmnist.client.classic.make_client = make_client
client.main(["--partition-id", "0", "--num-partitions", "1"])
"""
    )
    assert (server, client) == ("server paused: True", "client paused: True")
