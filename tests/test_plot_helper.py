"""The plot helper: a real second process draws the figures it is given; without it, the server draws them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import fedmnist.results.plots
from fedmnist.results.plot_helper import PlotHelper
from fedmnist.results.plots import draw_figure, run_figures
from fedmnist.results.records import Summary
from test_history import sample_history
from test_plots import SUMMARY

PNG = b"\x89PNG\r\n\x1a\n"
WITH_CONFUSION: Summary = {
    **SUMMARY,
    "confusion": [[5 if row == column else 1 for column in range(10)] for row in range(10)],
}
FIGURES = ["loss", "label_histogram", "confusion"]


def refuse_to_draw_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make drawing in this process fail, so that a figure that exists was drawn by the helper."""

    def drawn_here(*args: object) -> Path:
        raise AssertionError("drawn in the server's process, not the helper's")

    monkeypatch.setattr(fedmnist.results.plots, "draw_figure", drawn_here)


def test_the_helper_draws_the_figures_it_is_given_in_its_own_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_to_draw_here(monkeypatch)
    with PlotHelper() as helper:
        helper.start()
        drawing = helper.draw(FIGURES, sample_history(), WITH_CONFUSION, tmp_path)
        paths = drawing()
    assert paths == [tmp_path / "loss.png", tmp_path / "label_histogram.png", tmp_path / "confusion.png"]
    assert all(path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000 for path in paths)


def test_without_its_helper_the_server_draws_every_figure_itself(tmp_path: Path) -> None:
    with PlotHelper() as helper:
        helper.start()
        assert helper._process is not None
        helper._process.kill()  # Gone before the end of the run (killed, or out of memory).
        helper._process.wait()
        paths = helper.draw(FIGURES, sample_history(), WITH_CONFUSION, tmp_path)()
    assert [path.name for path in paths] == ["loss.png", "label_histogram.png", "confusion.png"]
    assert all(path.read_bytes()[:8] == PNG for path in paths)
    assert PlotHelper().draw(["loss"], sample_history(), SUMMARY, tmp_path / "never started")()[0].exists()


def test_a_folder_the_helper_cannot_write_to_is_an_oserror_of_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_to_draw_here(monkeypatch)
    (tmp_path / "plots").write_text("a file where the folder should be")
    with PlotHelper() as helper:
        helper.start()
        drawing = helper.draw(FIGURES, sample_history(), WITH_CONFUSION, tmp_path / "plots")
        with pytest.raises(OSError) as raised:
            drawing()
    assert raised.value.filename and "plots" in str(raised.value.filename)


def test_ctrl_c_does_not_reach_the_helper_which_ends_when_the_server_closes_its_input() -> None:
    helper = PlotHelper()
    helper.start()
    process = helper._process
    assert process is not None
    # Ctrl-C goes to the terminal's process group: not the helper's (after Ctrl-C the server saves its results).
    assert os.getpgid(process.pid) != os.getpgid(0)
    helper.close()  # As when the server ends, even by kill -9: the helper reads end-of-file.
    assert process.returncode == 0  # It ended by itself: close() kills a helper that does not, within 5 s.


def test_a_runs_figures_are_listed_in_order_and_each_is_drawn_by_its_name(tmp_path: Path) -> None:
    assert run_figures(SUMMARY) == ["accuracy", "loss", "label_histogram"]  # No client rounds, no confusion.
    assert run_figures(WITH_CONFUSION) == ["accuracy", "loss", "label_histogram", "confusion"]
    assert draw_figure("confusion", sample_history(), WITH_CONFUSION, tmp_path) == tmp_path / "confusion.png"
    with pytest.raises(ValueError, match="no figure 'confusion'"):
        draw_figure("confusion", sample_history(), SUMMARY, tmp_path)
