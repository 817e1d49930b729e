"""A second process that draws some of a run's plots while the server draws the others.

matplotlib draws on one core: a 40-round run's six figures took 0.85 s here,
most of what a run does after its last round. The helper is started with the
server and imports matplotlib while the server waits for its clients; at the
end it draws some of the figures (``HELPER_FIGURES`` in
``fedmnist.server.saving``), from the History and the summary it is sent, while
the server writes its files and draws the rest. On 2 cores the plots take about
half as long.

The helper reads one job on its standard input and ends: when the server
ends first, even by ``kill -9``, the helper reads end-of-file and ends too.
It runs in a session of its own, so Ctrl-C at the terminal does not reach
it: the server decides when drawing stops, and after Ctrl-C it still saves
the partial results. Whatever happens to the helper, the plots are drawn:
figures it did not draw, the server draws itself.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Self

from flwr.server.history import History

from fedmnist.common.garbage import pause_collection, start_up_done
from fedmnist.results.history import history_from_dict, history_to_dict
from fedmnist.results.records import Summary

log = logging.getLogger(__name__)

JOB_SECONDS = 60.0  # How long the server waits for the helper's figures before drawing them itself.


class PlotHelper:
    """The helper process of one run: ``start`` it early, ``draw`` with it once, ``close`` it at the end."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the helper; if it cannot start, the server draws every figure itself."""
        package_home = str(Path(__file__).resolve().parents[2])  # The folder that holds fedmnist/.
        code = "import sys; sys.path.insert(0, sys.argv[1]); from fedmnist.results.plot_helper import serve; serve()"
        try:  # stderr is the server's: the helper's traceback, if any, lands in the server's log.
            self._process = subprocess.Popen(
                [sys.executable, "-c", code, package_home],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as error:
            log.debug("the plot helper did not start (%s); the server draws every plot", error)

    def draw(self, figures: list[str], history: History, summary: Summary, folder: Path) -> Callable[[], list[Path]]:
        """Give the helper ``figures`` (names of ``fedmnist.results.plots.run_figures``) to draw; return the
        call that waits for their paths.

        Without a helper (never started, gone, or failing), the figures it did
        not draw are drawn in this process, by that call. A file that cannot be
        written raises OSError, as drawing here would.
        """

        def here(names: list[str]) -> list[Path]:
            from fedmnist.results.plots import draw_figure

            return [draw_figure(name, history, summary, folder) for name in names]

        process, self._process = self._process, None  # One job per helper.
        if process is None or process.stdin is None or process.poll() is not None:
            return partial(here, figures)
        try:
            job = {"figures": figures, "history": history_to_dict(history), "summary": summary, "folder": str(folder)}
            encoded = json.dumps(job).encode()
            with process.stdin:  # Closed after the job: the helper reads to its end.
                process.stdin.write(encoded)
        except (OSError, TypeError, ValueError):  # It ended meanwhile (a broken pipe), or a value is not JSON.
            _end(process)
            return partial(here, figures)
        process.stdin = None  # So that communicate() only reads.

        def result() -> list[Path]:
            answer = _read_answer(process)
            if "error" in answer:
                raise OSError(answer.get("errno"), answer["error"], answer.get("filename"))
            done = [Path(path) for path in answer.get("paths", [])]
            return [*done, *here(figures[len(done) :])]  # What it did not draw (it ended early), drawn here.

        return result

    def close(self) -> None:
        """End a helper that got no job (the run stopped before its results): it reads end-of-file."""
        process, self._process = self._process, None
        if process is not None:
            _end(process)


def _end(process: subprocess.Popen[bytes]) -> None:
    """Close the helper's input, so it ends; kill it if it does not within seconds."""
    if process.stdin is not None:
        process.stdin.close()
        process.stdin = None
    try:
        process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def _read_answer(process: subprocess.Popen[bytes]) -> dict:
    """The helper's JSON answer; ``{}`` (draw them here) if it ended without one or took too long."""
    try:
        output, _ = process.communicate(timeout=JOB_SECONDS)
        answer = json.loads(output or b"{}")
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return {}
    except ValueError:  # Not JSON: it crashed while writing (its traceback is in the server's log).
        return {}
    return answer if isinstance(answer, dict) else {}


def serve() -> None:
    """The helper process: import matplotlib, read one job from stdin, draw it, answer on stdout."""
    pause_collection()
    from fedmnist.results.figures import warm_up
    from fedmnist.results.plots import draw_figure

    warm_up()  # Before the job comes.
    start_up_done()
    job = sys.stdin.buffer.read()
    if not job:  # The server ended or stopped before its results: nothing to draw.
        return
    request = json.loads(job)
    history, summary, folder = history_from_dict(request["history"]), request["summary"], Path(request["folder"])
    paths: list[str] = []
    try:
        for figure in request["figures"]:
            paths.append(str(draw_figure(figure, history, summary, folder)))
        answer: dict = {"paths": paths}
    except OSError as error:
        answer = {
            "paths": paths,
            "error": error.strerror or str(error),
            "errno": error.errno,
            "filename": error.filename,
        }
    sys.stdout.buffer.write(json.dumps(answer).encode())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # At once: Python's own exit, with matplotlib loaded, took 0.1 s the server waited for.
