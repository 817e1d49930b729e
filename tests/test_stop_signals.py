"""A stop signal that another thread takes still stops a main thread that waits for the run.

CI once sent SIGTERM to a simulation after round 1 and it ran on to round 30:
the kernel gave the signal to one of Ray's threads, and the server's main
thread, asleep in ``Future.result()``, ran Python's handler only when the
rounds were done. The kernel's choice of thread is not something a test can
wait for, so these tests force it: the main thread blocks SIGTERM, and only a
helper thread can take it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from conftest import PROJECT_ROOT, stream

# Waits with ``{wait}`` for a future nobody completes, with SIGTERM deliverable to a helper thread only.
_WAITER = textwrap.dedent("""
    import signal, subprocess, sys, threading, time
    from concurrent.futures import Future
    from fedmnist.common.cli import take_back_stop_signals, wait_for, wait_for_process

    take_back_stop_signals()
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()  # Created unblocked: it takes the signal.
    signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGTERM}})
    never, sleeper = Future(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:  # The signal may come while "waiting" is still being printed: it too must end in "stopped".
        print("waiting", flush=True)
        {wait}
    except KeyboardInterrupt:
        sleeper.kill()
        print("stopped", flush=True)
""")


def _stop_time(wait: str) -> float:
    """Seconds from SIGTERM to the waiter's end after its KeyboardInterrupt; fails if that takes over 10 s."""
    waiter = subprocess.Popen(
        [sys.executable, "-c", _WAITER.format(wait=wait)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert stream(waiter.stdout).readline().strip() == "waiting"
        sent = time.monotonic()
        waiter.send_signal(signal.SIGTERM)
        output, _ = waiter.communicate(timeout=10)  # Times out (a failure) if the wait goes on.
        assert output.strip() == "stopped", output
        return time.monotonic() - sent
    finally:
        waiter.kill()
        waiter.wait()


def test_a_sigterm_taken_by_another_thread_interrupts_waiting_for_a_future() -> None:
    """``wait_for`` is what the simulation's main thread waits for its rounds with (``Future.result()`` hung)."""
    assert _stop_time("wait_for(never)") < 10


def test_a_sigterm_taken_by_another_thread_interrupts_waiting_for_a_process() -> None:
    """``wait_for_process`` is how ./run.sh keeps its dashboard up until Ctrl-C (``Popen.wait()`` hung)."""
    assert _stop_time("wait_for_process(sleeper)") < 10
