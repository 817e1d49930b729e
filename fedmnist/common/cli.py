"""Command-line plumbing shared by server.py and client.py.

The parser with one-line errors (its argument types are ``fedmnist.settings.arguments``),
one-line errors instead of tracebacks, stop signals that stop a run cleanly, and a
console that shows our progress and Flower's warnings without Flower's
per-message INFO chatter (``--verbose`` brings that back).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from fedmnist.common.errors import AlreadySaid, UserError

T = TypeVar("T")

EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

# Flower logs these two deprecations on every start; we use the classic runtime on
# purpose (docs/architecture.md, "Why this runtime"), so the long notice is shortened, not hidden.
_DEPRECATED_CALLS = ("start_server()", "start_client()", "`run_simulation`")


# What server.py and client.py import; found (not imported) before anything else runs.
_REQUIRED_PACKAGES = ("numpy", "flwr", "tensorflow", "keras", "sklearn", "matplotlib")


def require_environment(program: str) -> None:
    """Exit with one line when the project's packages are missing (plain ``python3`` outside .venv)."""
    import importlib.util

    missing = [name for name in _REQUIRED_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        exit_now(
            EXIT_USER_ERROR,
            f"error: {program} needs the project's environment, and this Python lacks "
            f"{', '.join(missing)}: run ./run.sh once (it sets up .venv), then .venv/bin/python {program} ...",
        )


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line: ``prog: error: ...``.

    Abbreviations are off: with them ``--client 5`` meant ``--clients 5``, and a typo
    of a flag added later would silently mean another flag.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


RESUME_COMMAND = "FEDMNIST_RESUME_COMMAND"  # ./run.sh tells its server how the person would continue the run.


# TensorFlow prints these at import whatever its log level (absl logs before its set-up); Ray workers'
# lines start with their "(pid=N)". Run logs keep them; the console does not.
_TENSORFLOW_NOTES = (
    "WARNING: All log messages before absl::InitializeLog()",
    "I0000 ",
    "To enable the following instructions:",
)
_RAY_WORKER_PREFIX = re.compile(r"^(\x1b\[\d+m)?\(pid=\d+\)(\x1b\[0m)? ?")


def is_start_up_noise(line: str) -> bool:
    """Whether ``line`` is one of TensorFlow's start-up notes, from this process or a Ray worker."""
    return _RAY_WORKER_PREFIX.sub("", line).startswith(_TENSORFLOW_NOTES)


def resume_command() -> str:
    """The command that continues this run: ``./run.sh``'s own when it started us, else this program's."""
    launched = os.environ.get(RESUME_COMMAND)
    if launched:
        return launched
    return resume_command_for([os.path.basename(sys.executable), sys.argv[0]], sys.argv[1:])


def resume_command_for(program: list[str], arguments: list[str]) -> str:
    """``PROGRAM ARGUMENTS --resume``, shell-quoted, with ``--resume`` once."""
    return shlex.join([*program, *[argument for argument in arguments if argument != "--resume"], "--resume"])


def run_cli(main: Callable[[], T], interrupted: str | None = "interrupted") -> T:
    """Run ``main``; a UserError becomes ``error: ...`` on stderr and exit 2.

    A stop signal exits 130, saying ``interrupted`` (None: nothing, for a
    program that has said what it stopped and saved already).

    Any other exception is a bug: one ``error:`` line too (the traceback with
    ``--verbose``), exit 1, and never a hang: gRPC's and TensorFlow's threads
    would keep a normally exiting interpreter waiting for ever.
    """
    try:
        return main()
    except AlreadySaid:
        exit_now(EXIT_USER_ERROR)
    except UserError as error:
        exit_now(EXIT_USER_ERROR, f"error: {error}")
    except KeyboardInterrupt:
        exit_now(EXIT_INTERRUPTED, interrupted)
    except Exception as error:  # noqa: BLE001
        if _verbose:
            traceback.print_exc()
        exit_now(EXIT_BUG, f"error: unexpected {type(error).__name__}: {error} (--verbose shows the traceback)")


_stopping = False  # Set once a stop signal was taken: later ones are ignored.


def take_back_stop_signals() -> None:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt once; later signals are ignored.

    Call on the main thread (signal handlers can only be set there). A person
    pressing Ctrl-C twice, or ./run.sh stopping its children after the
    terminal's Ctrl-C, must not interrupt the saving that the first one began.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)


def ignore_stop_signals() -> None:
    """From now on SIGINT and SIGTERM do nothing (the process is saving and then leaving)."""
    global _stopping
    _stopping = True


def _stop(signum: int, frame: object) -> None:
    global _stopping
    if not _stopping:
        _stopping = True
        raise KeyboardInterrupt


SIGNAL_POLL_SECONDS = 0.2  # How soon a blocked main thread notices a stop signal another thread took.


def wait_for(future: futures.Future[T]) -> T:
    """``future.result()`` on the main thread, but a stop signal still interrupts it (within 0.2 s).

    Python runs signal handlers on the main thread, and only when that thread
    runs. The kernel gives a process-wide SIGTERM to any thread that does not
    block it, Ray's and gRPC's included; a main thread asleep in a lock until
    the future is done then handles the signal only after the whole run (on CI
    a simulation stopped by ./run.sh after round 1 ran on to its last round).
    Waking it now and then lets it handle the signal.
    """
    while not futures.wait([future], timeout=SIGNAL_POLL_SECONDS).done:
        pass
    return future.result()


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, ended but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"  # A zombie has ended.
    except OSError:
        return False


def wait_for_process(process: subprocess.Popen) -> int:
    """``process.wait()``, but a stop signal taken by another thread still interrupts it (see ``wait_for``)."""
    while process.poll() is None:
        time.sleep(SIGNAL_POLL_SECONDS)
    return process.returncode


def exit_now(status: int, message: str | None = None) -> NoReturn:
    """Print ``message`` (if any) and leave at once, skipping interpreter teardown.

    Only for processes whose work is finished or abandoned: every result file is
    already closed and fsynced. Tearing down TensorFlow and gRPC takes about 1.5 s
    per process, and their background threads (a client that never reached its
    server leaves some) sometimes die then with a traceback of their own, burying
    the one line that matters.
    """
    if message is not None:
        print(message, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(status)


_verbose = False  # --verbose: tracebacks of unexpected errors too.


def configure_logging(verbose: bool = False) -> None:
    """Our messages at INFO; Flower's at WARNING unless ``verbose``."""
    from flwr.common.logger import update_console_handler

    global _verbose
    _verbose = verbose
    # Third-party libraries stay at WARNING; our own progress is INFO.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)-7s %(message)s", force=True)
    logging.getLogger("fedmnist").setLevel(logging.DEBUG if verbose else logging.INFO)  # DEBUG: tracebacks.
    flower = logging.getLogger("flwr")
    flower.propagate = False  # Flower has its own console handler; avoid double lines.
    flower.addFilter(_shorten_deprecation_notice)
    flower.addFilter(_drop_user_error_traceback)
    update_console_handler(level=logging.INFO if verbose else logging.WARNING, colored=sys.stderr.isatty())
    logging.getLogger("grpc._server").addFilter(_drop_closed_bridge)
    if not verbose:
        threading.excepthook = _one_line_thread_error


def _drop_user_error_traceback(record: logging.LogRecord) -> bool:
    """Flower logs "Client raised an exception." with a traceback before re-raising it.

    For a UserError (a client refusing the run's settings) the one ``error:``
    line that ``run_cli`` prints says it all.
    """
    return not (record.exc_info and isinstance(record.exc_info[1], UserError))


def _drop_closed_bridge(record: logging.LogRecord) -> bool:
    """gRPC logs a traceback when a client's stream ends with Flower's ``GrpcBridgeClosed``.

    That is how every client disconnect looks on the server (Ctrl-C, a crash, the
    run's end); the round's record and the console already say so in one line.
    """
    return not (record.exc_info and record.exc_info[0] and record.exc_info[0].__name__ == "GrpcBridgeClosed")


def _one_line_thread_error(args: threading.ExceptHookArgs) -> None:
    """Report an exception in a background thread in one line (``--verbose`` shows the traceback).

    gRPC's and Flower's connection threads sometimes fail this way while a client
    retries an unreachable or mistrusted server; the main thread reports the
    failure that matters, and a stray traceback would bury it.
    """
    name = args.thread.name if args.thread else "?"
    if "Cannot monitor channel state" in str(args.exc_value):
        return  # gRPC's watcher of a channel the retry loop closed: the main thread says what failed.
    logging.getLogger("fedmnist").warning(
        "background thread %s failed: %s: %s", name, args.exc_type.__name__, args.exc_value
    )


_noticed: set[str] = set()


def _shorten_deprecation_notice(record: logging.LogRecord) -> bool:
    """Replace Flower's multi-line start_server/start_client notice by one line, once per process."""
    if str(record.msg).startswith("DEPRECATED FEATURE") and isinstance(record.args, tuple) and record.args:
        call = next((name for name in _DEPRECATED_CALLS if name in str(record.args[0])), None)
        if call is not None:
            if call in _noticed:  # A client retrying, or a sweep's next server: said already.
                return False
            _noticed.add(call)
            record.msg, record.args = (
                "Flower marks %s as deprecated; fedmnist uses it on purpose (see docs/architecture.md, Why this runtime).",
                (call,),
            )
    return True
