"""Graphs of a run's clients and its final model: each client's curve, their labels, the mistakes.

``python -m fedmnist.results.plots`` redraws them with the others from a saved history.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from fedmnist.results.figures import describe_run, plt, save_figure
from fedmnist.results.records import RoundRecord, Summary, client_name, client_order
from fedmnist.settings import defaults

MAX_LEGEND_CLIENTS = 12  # clients.png names each client up to this many; beyond, thin unnamed lines.


MAX_FIGURE_INCHES = 20  # label_histogram.png grows with the clients up to this width.


MAX_BAR_CLIENTS = 30  # label_histogram.png draws a bar per client up to this many, then filled steps.


def plot_clients(summary: Summary, out_dir: str | Path) -> Path:
    """Draw ``clients.png``: each client's accuracy on its own validation slice, per round.

    Up to ``MAX_LEGEND_CLIENTS`` clients, one line each (by partition id, with
    the rows of its slice: 4 rows make an accuracy that jumps by 0.25); a client
    whose labels are skewed (``dirichlet:0.1``) shows as the line that lags,
    which the weighted average hides. More clients are drawn as their
    distribution per round, as LEAF reports it: the median and the band from
    the 10th to the 90th percentile.
    """
    figure, axes = plt.subplots(figsize=(9, 5), dpi=110)
    records = summary.get("rounds", [])
    curves, rows = client_curves(records), client_rows(records)
    many = len(curves) > MAX_LEGEND_CLIENTS
    if many:
        spread = client_spread(records)
        rounds = [n for n, *_ in spread]
        axes.fill_between(
            rounds,
            [p10 for *_, p10, _ in spread],
            [p90 for *_, p90 in spread],
            alpha=0.3,
            color="tab:blue",
            label="10th to 90th percentile of the clients",
        )
        axes.plot(
            rounds,
            [median for _, median, *_ in spread],
            "o-",
            markersize=3,
            color="tab:blue",
            label=f"median client: {spread[-1][1]:.3f}",
        )
        sizes = sorted(rows.values())
        shown = f"{len(curves)} clients' accuracy per round (slices of {sizes[0]}-{sizes[-1]} rows)" if sizes else ""
    else:
        for name, points in curves.items():
            evaluated, values = zip(*points)
            size = f" ({rows[name]} rows)" if name in rows else ""
            axes.plot(evaluated, values, "o-", markersize=3, label=f"{name}{size}: {values[-1]:.3f}")
        shown = "each client's validation accuracy"
    axes.set_xlabel("round")
    axes.set_ylabel("accuracy on the client's validation slice")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(f"{shown}\n{describe_run(summary)}", fontsize=10)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, Path(out_dir) / "clients.png")


def client_rows(records: list[RoundRecord]) -> dict[str, int]:
    """``{"client 0": 50, ...}``: the rows each client last evaluated on (its validation slice)."""
    return {
        client_name(client): client["evaluate"]["examples"]
        for record in records
        for client in record.get("per_client", [])
        if "examples" in client.get("evaluate", {})
    }


def client_spread(records: list[RoundRecord]) -> list[tuple[int, float, float, float]]:
    """``[(round, median, 10th percentile, 90th percentile), ...]`` of the clients' validation accuracy."""
    spread = []
    for record in records:
        values = [
            c["evaluate"]["accuracy"]
            for c in record.get("per_client", [])
            if c.get("evaluate", {}).get("accuracy") is not None
        ]
        if values:
            p10, median, p90 = np.percentile(values, [10, 50, 90])
            spread.append((record["round"], float(median), float(p10), float(p90)))
    return spread


def client_curves(records: list[RoundRecord]) -> dict[str, list[tuple[int, float]]]:
    """``{"client 0": [(1, 0.81), (2, 0.86)], ...}``: each client's evaluate accuracy per round, by partition id."""
    curves: dict[str, list[tuple[int, float]]] = {}
    order: dict[str, tuple[int, str]] = {}
    for record in records:
        for client in record.get("per_client", []):
            accuracy = client.get("evaluate", {}).get("accuracy")
            if accuracy is not None:
                curves.setdefault(client_name(client), []).append((record["round"], accuracy))
                order.setdefault(client_name(client), client_order(client))
    return dict(sorted(curves.items(), key=lambda item: order[item[0]]))  # Colours C0, C1...: the dashboard's.


def plot_confusion(confusion: list[list[int]], summary: Summary, out_dir: str | Path) -> Path:
    """Draw ``confusion.png``: the final global model's held-out predictions, true digit by predicted digit."""
    matrix = np.asarray(confusion)
    figure, axes = plt.subplots(figsize=(7, 6), dpi=110)
    image = axes.imshow(matrix, cmap="Blues")
    for true, predicted in np.ndindex(matrix.shape):
        count = matrix[true, predicted]
        if count:
            axes.text(
                predicted,
                true,
                str(count),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if count > matrix.max() / 2 else "black",
            )
    axes.set_xticks(range(matrix.shape[1]))
    axes.set_yticks(range(matrix.shape[0]))
    axes.set_xlabel("predicted digit")
    axes.set_ylabel("true digit")
    accuracy = np.trace(matrix) / max(1, matrix.sum())
    axes.set_title(
        f"held-out confusion matrix, final model: {accuracy:.3f} accurate\n{describe_run(summary)}", fontsize=9
    )
    figure.colorbar(image, ax=axes, label="test images")
    figure.tight_layout()
    return save_figure(figure, Path(out_dir) / "confusion.png")


def plot_mistakes(mistakes: list[dict[str, Any]], images: np.ndarray, summary: Summary, out_dir: str | Path) -> Path:
    """Draw ``mistakes.png``: held-out digits the final model got wrong, the most confident first.

    ``mistakes`` are ``{"index", "true", "predicted", "confidence"}`` (``fedmnist.server.mistakes``);
    ``images`` the held-out pixels they index, shape (n, 784).
    """
    columns, tile, gap = 8, 28, 14  # Pixels of a digit, and room below it for its label.
    rows = max(1, math.ceil(len(mistakes) / columns))
    # One mosaic image and one imshow: 24 subplots took 1.3 s to draw here, this takes about 0.2 s.
    mosaic = np.zeros((rows * (tile + gap), columns * (tile + gap // 2)), dtype=np.uint8)
    figure, axes = plt.subplots(figsize=(columns * 1.2, rows * 1.4 + 0.6), dpi=110)
    for number, mistake in enumerate(mistakes):
        top, left = (number // columns) * (tile + gap), (number % columns) * (tile + gap // 2)
        mosaic[top : top + tile, left : left + tile] = images[mistake["index"]].reshape(tile, tile)
        axes.text(
            left + tile / 2,
            top + tile + gap / 2,
            f"{mistake['true']} as {mistake['predicted']}, {confidence_label(mistake['confidence'])}",
            ha="center",
            va="center",
            fontsize=7,
        )
    axes.imshow(mosaic, cmap="gray_r", interpolation="nearest")
    axes.axis("off")
    axes.set_title(
        f"held-out digits the final model gets wrong (true as predicted, confidence)\n{describe_run(summary)}",
        fontsize=8,
    )
    figure.tight_layout()
    return save_figure(figure, Path(out_dir) / "mistakes.png")


def confidence_label(confidence: float) -> str:
    """``0.996`` -> ``99%``: rounded down, so only a certain prediction reads 100%."""
    return f"{math.floor(100 * confidence)}%"


def plot_label_histograms(summary: Summary, out_dir: str | Path) -> Path:
    """Draw ``label_histogram.png``: one stacked bar per client, one colour per digit.

    Under ``iid`` every bar has about the same mix; under ``dirichlet:0.1`` or
    ``shards:2`` most bars are one or two colours: the label skew clients train on.
    """
    histograms = np.asarray(summary.get("label_histograms") or [], dtype=float).reshape(-1, defaults.NUM_CLASSES)
    # Half an inch per client up to a 20-inch figure; 1,000 clients at half an inch were 55,000 pixels wide.
    figure, axes = plt.subplots(figsize=(min(MAX_FIGURE_INCHES, max(9, 0.5 * len(histograms) + 4)), 5), dpi=110)
    clients = np.arange(len(histograms))
    colours = [plt.get_cmap("tab10")(digit) for digit in range(defaults.NUM_CLASSES)]
    labels = [str(digit) for digit in range(defaults.NUM_CLASSES)]
    if len(histograms) <= MAX_BAR_CLIENTS:
        bottom = np.zeros(len(histograms))
        for digit in range(defaults.NUM_CLASSES):
            axes.bar(clients, histograms[:, digit], bottom=bottom, color=colours[digit], label=labels[digit])
            bottom += histograms[:, digit]
    else:  # The same stacked columns as ten filled steps: 1,000 bars took 1.5 s to draw for 100 clients.
        axes.stackplot(clients, histograms.T, colors=colours, labels=labels, step="mid", linewidth=0)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlim(-0.5, max(len(histograms), 1) - 0.5)
    axes.set_xlabel("client (partition id)")
    axes.set_ylabel("examples (training + validation)")
    axes.set_title(f"labels per client\n{describe_run(summary)}", fontsize=10)
    axes.legend(title="digit", bbox_to_anchor=(1.01, 1), loc="upper left")
    figure.tight_layout()
    return save_figure(figure, Path(out_dir) / "label_histogram.png")
