"""Plots from a saved history."""

from __future__ import annotations

from pathlib import Path

from fedmnist.history import save_history
from fedmnist.paths import RunPaths
from fedmnist.plots import describe_run, main, plot_history, plot_label_histograms
from test_history import sample_history

SUMMARY = {
    "config": {"clients": 3, "rounds": 2, "seed": 42, "partition": "dirichlet:0.5", "strategy": "fedprox"},
    "data_source": "mnist-5k",
    "label_histograms": [[5, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0, 4, 4, 0, 0, 0, 0, 0, 0, 0], [1] * 10],
}


def test_plot_history_writes_non_empty_pngs(tmp_path: Path) -> None:
    paths = plot_history(sample_history(), SUMMARY, tmp_path)
    assert [p.name for p in paths] == ["accuracy.png", "loss.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000  # Axes, two curves, title: not a blank image.


def test_title_names_settings_and_data_source() -> None:
    assert describe_run(SUMMARY) == (
        "fedprox, 3 clients, 2 rounds, dirichlet:0.5 partition, data: mnist-5k (offline 5,000-image subset), seed 42"
    )


def test_label_histogram_is_a_non_empty_png(tmp_path: Path) -> None:
    path = plot_label_histograms(SUMMARY, tmp_path)
    assert path.name == "label_histogram.png" and path.stat().st_size > 10_000


def test_command_redraws_from_a_saved_pickle(tmp_path: Path, capsys) -> None:
    run = RunPaths(tmp_path, 2)
    save_history(run, sample_history(), SUMMARY)
    main([str(run.pickle)])
    assert (tmp_path / "plots" / "accuracy.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "accuracy.png" in printed and "label_histogram.png" in printed
