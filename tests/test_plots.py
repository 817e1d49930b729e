"""Plots from a saved history."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmnist.results.client_plots import (
    client_curves,
    client_rows,
    client_spread,
    confidence_label,
    plot_clients,
    plot_confusion,
    plot_label_histograms,
    plot_mistakes,
)
from fedmnist.results.figures import describe_run
from fedmnist.results.history import save_history
from fedmnist.results.paths import RunPaths
from fedmnist.results.plots import HELD_OUT, TRAINING, VALIDATION, history_figure, main, plot_comparison, plot_history
from fedmnist.results.records import ClientEntry, RoundRecord, Summary
from test_history import sample_history

SUMMARY: Summary = {
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


def long_history(rounds: int = 10):
    from flwr.server.history import History

    history = History()
    history.add_metrics_centralized(0, {"accuracy": 0.11})
    for r in range(1, rounds + 1):
        held_out = [0.70, 0.85, 0.88, 0.90, 0.91, 0.915, 0.93, 0.925, 0.92, 0.921][r - 1]
        history.add_metrics_centralized(r, {"accuracy": held_out})
        history.add_metrics_distributed(r, {"accuracy": held_out - 0.01})
        history.add_metrics_distributed_fit(r, {"accuracy": held_out + 0.02})
    return history


def test_accuracy_figure_zooms_into_late_rounds_marks_the_best_and_uses_whole_rounds() -> None:
    import matplotlib.pyplot as plt

    figure = history_figure(long_history(), {"config": {"rounds": 10}}, "accuracy", "accuracy")
    full, zoom = figure.axes
    labels = [str(line.get_label()) for line in full.get_lines()]
    assert any(label.startswith(HELD_OUT) for label in labels)
    assert any(label.startswith(VALIDATION) for label in labels)
    assert any(label.startswith(TRAINING) for label in labels)  # Fit accuracy is drawn too.
    assert "best held-out: 0.930 at round 7" in labels
    # The zoomed panel: rounds 5-10 (the last half), values 0.90..0.945 plus a 10% margin, not 0.11..0.95.
    assert zoom.get_xlim() == (4.5, 10.5)
    low, high = zoom.get_ylim()
    assert 0.89 < low < 0.905 and 0.945 < high < 0.96
    figure.canvas.draw()
    assert all(float(tick).is_integer() for tick in full.get_xticks())  # No round 0.2, 0.4, ...
    plt.close(figure)


def test_a_one_round_title_says_round() -> None:
    assert "1 round," in describe_run({"config": {"rounds": 1, "clients": 2}})


RECORDS: list[RoundRecord] = [
    {
        "round": 1,
        "per_client": [
            {"cid": "a", "partition_id": 0, "evaluate": {"accuracy": 0.8}},
            {"cid": "b", "partition_id": 1, "evaluate": {"accuracy": 0.4}},
        ],
    },
    {
        "round": 2,
        "per_client": [
            {"cid": "a", "partition_id": 0, "evaluate": {"accuracy": 0.85}},
            {"cid": "zz9-foreign", "evaluate": {"accuracy": 0.5}},
        ],
    },
]


def test_each_clients_curve_is_kept_apart(tmp_path: Path) -> None:
    assert client_curves(RECORDS) == {
        "client 0": [(1, 0.8), (2, 0.85)],
        "client 1": [(1, 0.4)],
        "client zz9-fo": [(2, 0.5)],
    }
    assert plot_clients({**SUMMARY, "rounds": RECORDS}, tmp_path).stat().st_size > 10_000


def test_confusion_and_mistakes_pictures(tmp_path: Path) -> None:
    import numpy as np

    confusion = np.eye(10, dtype=int) * 90
    confusion[4, 9] = 10
    assert plot_confusion(confusion.tolist(), SUMMARY, tmp_path).stat().st_size > 10_000
    images = np.zeros((3, 784), np.uint8)
    mistakes = [{"index": 2, "true": 4, "predicted": 9, "confidence": 0.97}]
    assert plot_mistakes(mistakes, images, SUMMARY, tmp_path).stat().st_size > 5_000


def test_command_compares_runs_by_name_in_one_png(tmp_path: Path, capsys) -> None:
    for rounds, name in ((2, "fedavg-iid"), (3, "fedprox-shards2")):
        save_history(RunPaths(tmp_path / name, rounds), sample_history(), {**SUMMARY, "name": name})
    out = tmp_path / "both.png"
    main(
        [
            "--compare",
            str(tmp_path / "fedavg-iid" / "history" / "history_2.json"),
            str(tmp_path / "fedprox-shards2" / "history" / "history_3.json"),
            "--out",
            str(out),
        ]
    )
    assert capsys.readouterr().out.strip() == str(out) and out.stat().st_size > 10_000


def test_command_redraws_from_a_saved_pickle(tmp_path: Path, capsys) -> None:
    run = RunPaths(tmp_path, 2)
    save_history(run, sample_history(), SUMMARY)
    main([str(run.pickle)])
    assert (tmp_path / "plots" / "accuracy.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "accuracy.png" in printed and "label_histogram.png" in printed


def test_a_thousand_clients_give_pictures_of_a_readable_size(tmp_path: Path) -> None:
    """Half an inch per client made label_histogram.png 55,000 pixels wide for 1,000 clients."""
    import warnings

    from matplotlib.image import imread

    clients = 1000
    histograms = [[4 if digit == client % 10 else 0 for digit in range(10)] for client in range(clients)]
    rounds: list[RoundRecord] = [
        {
            "round": r,
            "per_client": [
                {"cid": str(c), "partition_id": c, "evaluate": {"accuracy": 0.1 * r}} for c in range(r, clients, 100)
            ],
        }
        for r in (1, 2)
    ]
    summary: Summary = {**SUMMARY, "label_histograms": histograms, "rounds": rounds}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # E.g. "Tight layout not applied" under a 10-entry legend.
        for path in (plot_label_histograms(summary, tmp_path), plot_clients(summary, tmp_path)):
            height, width = imread(path).shape[:2]
            assert width <= 20 * 110 and height <= 5 * 110, (path.name, width, height)


def test_many_clients_are_drawn_as_their_median_and_10th_to_90th_percentile() -> None:
    """Eleven clients at 0.0, 0.1, ..., 1.0: median 0.5, 10th percentile 0.1, 90th 0.9 (linear interpolation)."""
    per_client: list[ClientEntry] = [
        {"cid": str(c), "partition_id": c, "evaluate": {"accuracy": c / 10, "examples": 4 + c}} for c in range(11)
    ]
    records: list[RoundRecord] = [{"round": 1, "per_client": per_client}]
    [(round_number, median, p10, p90)] = client_spread(records)
    assert round_number == 1 and (round(median, 9), round(p10, 9), round(p90, 9)) == (0.5, 0.1, 0.9)
    assert client_rows(records)["client 0"] == 4 and client_rows(records)["client 10"] == 14


def test_a_clients_legend_says_how_many_rows_its_accuracy_is_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.pyplot as plt

    records: list[RoundRecord] = [
        {"round": 1, "per_client": [{"cid": "a", "partition_id": 0, "evaluate": {"accuracy": 0.75, "examples": 4}}]}
    ]
    captured = []
    real_save = plt.Figure.savefig

    def save(figure, *args, **kwargs):  # The legend's texts, read before the figure is closed.
        captured.extend(
            text.get_text() for axes in figure.axes if axes.get_legend() for text in axes.get_legend().get_texts()
        )
        return real_save(figure, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", save)
    plot_clients({**SUMMARY, "rounds": records}, tmp_path)
    assert captured == ["client 0 (4 rows): 0.750"]


def test_confidence_is_rounded_down_so_only_a_certain_prediction_reads_100_percent() -> None:
    assert [confidence_label(c) for c in (0.996, 0.5, 1.0, 0.0)] == ["99%", "50%", "100%", "0%"]


def test_a_comparison_of_few_rounds_has_whole_round_ticks_and_a_style_per_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.pyplot as plt

    results = [{"setting": name, "curve": [(1, 0.8), (2, 0.9)]} for name in ("fedavg", "fedprox")]  # Identical.
    seen = {}
    real_save = plt.Figure.savefig

    def save(figure, *args, **kwargs):
        axes = figure.axes[0]
        seen["ticks"] = [t for t in axes.get_xticks() if 1 <= t <= 2]
        seen["styles"] = [(line.get_linestyle(), line.get_marker()) for line in axes.get_lines()]
        return real_save(figure, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", save)
    plot_comparison(results, "two settings", tmp_path / "comparison.png")
    assert all(float(t).is_integer() for t in seen["ticks"]) and seen["ticks"]
    assert len(set(seen["styles"])) == 2
