"""Graphs of a run: accuracy and loss per round, each client's curve, the final model's mistakes, privacy spent.

Regenerate them from any saved history::

    python -m fedmnist.results.plots history/history_40.pkl [--out plots/]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # Files only; no display needed.
import matplotlib.pyplot as plt
from flwr.server.history import History
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedmnist.common.atomic import atomic_path
from fedmnist.results.records import client_name, client_order
from fedmnist.settings import defaults

_SOURCE_NAMES = {"mnist-5k": "mnist-5k (offline 5,000-image subset)", "openml": "OpenML mnist_784"}
# (file stem, metric key, y-axis label)
_FIGURES = (("accuracy", "accuracy", "accuracy"), ("loss", "loss", "cross-entropy loss"))
# What each curve is, in the words the legend uses.
HELD_OUT = "held-out test set (server, global model)"
VALIDATION = "clients' validation slices (weighted average)"
TRAINING = "clients' training, during local fit (weighted average)"
BASELINE = "central training, same rows and epochs (held-out)"
MAX_LEGEND_CLIENTS = 12  # clients.png names each client up to this many; beyond, thin unnamed lines.
MAX_FIGURE_INCHES = 20  # label_histogram.png grows with the clients up to this width.
MAX_BAR_CLIENTS = 30  # label_histogram.png draws a bar per client up to this many, then filled steps.
ZOOM_FROM = 0.5  # The zoomed panel shows the last half of the rounds, where the curves differ.


def plot_history(history: History, summary: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Draw ``accuracy.png`` and ``loss.png`` into ``out_dir``; return their paths.

    Each has the global model on the server's held-out test set (round 0 being
    the initial model), the clients' validation and training metrics (weighted
    by examples), and the centralized baseline when the run made one
    (``--baseline``). The best held-out round is marked; a second panel zooms
    into the last half of the rounds, which the first round's jump would
    otherwise squash into a sliver at the top.
    """
    return [
        _save(history_figure(history, summary, key, label), Path(out_dir) / f"{stem}.png")
        for stem, key, label in _FIGURES
    ]


def history_figure(history: History, summary: dict[str, Any], key: str, label: str) -> Figure:
    """The two-panel figure of ``plot_history`` for one metric (``accuracy`` or ``loss``)."""
    series = [
        (HELD_OUT, "s-", history.metrics_centralized.get(key, [])),
        (VALIDATION, "o-", history.metrics_distributed.get(key, [])),
        (TRAINING, ".:", history.metrics_distributed_fit.get(key, [])),
        (BASELINE, "--", summary.get("baseline", {}).get(key, [])),
    ]
    figure, (full, zoom) = plt.subplots(1, 2, figsize=(12, 5), dpi=110)
    for axes in (full, zoom):
        _draw_series(axes, series, summary, best=max if key == "accuracy" else min)
        axes.set_xlabel("round")
        axes.set_ylabel(label)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    _zoom_to_late_rounds(zoom, series)
    full.set_title(f"{label} per round", fontsize=10)
    zoom.set_title(f"the last {1 - ZOOM_FROM:.0%} of the rounds, zoomed", fontsize=10)
    full.legend(fontsize=8)
    figure.suptitle(describe_run(summary), fontsize=9)
    figure.tight_layout()
    return figure


def _draw_series(axes: Any, series: list[tuple[str, str, list]], summary: dict[str, Any], best: Any) -> None:
    for name, style, points in series:
        if points:
            rounds, values = zip(*points)
            axes.plot(rounds, values, style, markersize=3, label=f"{name}: {values[-1]:.3f} at round {rounds[-1]}")
    held_out = [(r, v) for r, v in series[0][2] if r > 0]
    if held_out:
        round_number, value = best(held_out, key=lambda point: point[1])
        axes.plot(
            [round_number],
            [value],
            "*",
            color="gold",
            markersize=14,
            markeredgecolor="black",
            label=f"best held-out: {value:.3f} at round {round_number}",
            zorder=5,
        )
    failed = [r["round"] for r in summary.get("rounds", []) if r.get("fit_failures") or r.get("evaluate_failures")]
    for index, server_round in enumerate(failed):
        axes.axvline(
            server_round,
            color="red",
            alpha=0.25,
            linewidth=4,
            label="round with client failures" if index == 0 else None,
        )


def _zoom_to_late_rounds(axes: Any, series: list[tuple[str, str, list]]) -> None:
    """Limit ``axes`` to the last rounds and to the values the curves take there."""
    last = max((points[-1][0] for _, _, points in series if points), default=0)
    start = max(1, int(last * ZOOM_FROM))
    values = [v for _, _, points in series for r, v in points if r >= start and math.isfinite(v)]
    if not values or last <= start:
        return
    low, high = min(values), max(values)
    margin = max((high - low) * 0.1, 1e-3)
    axes.set_xlim(start - 0.5, last + 0.5)
    axes.set_ylim(low - margin, high + margin)


def plot_clients(summary: dict[str, Any], out_dir: str | Path) -> Path:
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
    return _save(figure, Path(out_dir) / "clients.png")


def client_rows(records: list[dict[str, Any]]) -> dict[str, int]:
    """``{"client 0": 50, ...}``: the rows each client last evaluated on (its validation slice)."""
    return {
        client_name(client): client["evaluate"]["examples"]
        for record in records
        for client in record.get("per_client", [])
        if "examples" in client.get("evaluate", {})
    }


def client_spread(records: list[dict[str, Any]]) -> list[tuple[int, float, float, float]]:
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


def client_curves(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
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


def privacy_curve(records: list[dict[str, Any]]) -> list[tuple[int, float, float]]:
    """``[(round, epsilon spent, held-out accuracy), ...]`` of a differentially private run's rounds."""
    return [
        (r["round"], r["privacy"]["epsilon"], r["centralized"]["accuracy"])
        for r in records
        if r.get("privacy") and "accuracy" in r.get("centralized", {})
    ]


def plot_privacy(summary: dict[str, Any], out_dir: str | Path) -> Path:
    """Draw ``privacy.png``: the held-out accuracy against the privacy (epsilon) spent, one point per round.

    Read it as a price list: how much accuracy each extra unit of epsilon
    bought. The title gives the noise, the clipping norm and delta.
    """
    points = privacy_curve(summary.get("rounds", []))
    figure, axes = plt.subplots(figsize=(9, 5), dpi=110)
    rounds, epsilons, accuracies = zip(*points) if points else ((), (), ())
    axes.plot(epsilons, accuracies, "o-", markersize=3, label=HELD_OUT)
    for index in sorted({0, len(points) // 2, len(points) - 1}) if points else ():
        axes.annotate(
            f"round {rounds[index]}",
            (epsilons[index], accuracies[index]),
            textcoords="offset points",
            xytext=(4, -12),
            fontsize=8,
        )
    spent = summary.get("privacy") or (summary.get("rounds") or [{}])[-1].get("privacy") or {}
    axes.set_xlabel(f"epsilon spent (delta {spent.get('delta', '?')}, {spent.get('accounting', 'RDP')})", fontsize=8)
    axes.set_ylabel("accuracy")
    axes.set_title(
        f"accuracy against privacy spent: noise {spent.get('noise_multiplier')}, clipping norm "
        f"{spent.get('clipping_norm')} ({spent.get('clipping')} side)\n{describe_run(summary)}",
        fontsize=9,
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, Path(out_dir) / "privacy.png")


def plot_confusion(confusion: list[list[int]], summary: dict[str, Any], out_dir: str | Path) -> Path:
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
    return _save(figure, Path(out_dir) / "confusion.png")


def plot_mistakes(
    mistakes: list[dict[str, Any]], images: np.ndarray, summary: dict[str, Any], out_dir: str | Path
) -> Path:
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
    return _save(figure, Path(out_dir) / "mistakes.png")


def confidence_label(confidence: float) -> str:
    """``0.996`` -> ``99%``: rounded down, so only a certain prediction reads 100%."""
    return f"{math.floor(100 * confidence)}%"


def _save(figure: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path


def plot_label_histograms(summary: dict[str, Any], out_dir: str | Path) -> Path:
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
    return _save(figure, Path(out_dir) / "label_histogram.png")


_MARKERS = ("o", "s", "^", "v", "D", "x", "+", "*", "P")
_LINE_STYLES = ("-", "--", "-.", ":")


def plot_comparison(results: list[dict[str, Any]], title: str, path: str | Path) -> Path:
    """One held-out accuracy curve per setting of a sweep, in one figure."""
    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=110)
    for index, result in enumerate(results):
        if result["curve"]:
            rounds, values = zip(*result["curve"])
            # Settings that give the same curve (fedavg and fedprox after a round) must not hide each other.
            axes.plot(
                rounds,
                values,
                _LINE_STYLES[index % len(_LINE_STYLES)],
                marker=_MARKERS[index % len(_MARKERS)],
                markersize=5,
                fillstyle="none",
                label=f"{result['setting']}: {values[-1]:.3f}",
            )
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("round")
    axes.set_ylabel("held-out accuracy")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, Path(path))


def plot_privacy_utility(results: list[dict[str, Any]], title: str, path: str | Path) -> Path:
    """A sweep's settings as points: final held-out accuracy against the epsilon spent; runs without DP as lines."""
    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=110)
    for result in results:
        if result.get("epsilon") is None:
            axes.axhline(
                result["final"],
                linestyle="--",
                color="gray",
                label=f"{result['setting']} (no DP): {result['final']:.3f}",
            )
        else:
            axes.plot([result["epsilon"]], [result["final"]], "o", label=f"{result['setting']}: {result['final']:.3f}")
    axes.set_xscale("log")
    axes.set_xlabel("epsilon spent over the run (log scale; lower is more private)")
    axes.set_ylabel("final held-out accuracy")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, Path(path))


def describe_run(summary: dict[str, Any]) -> str:
    """One line for plot titles: strategy, clients, rounds, data source, seed."""
    run = summary.get("config", {})
    if not run:
        return "settings unknown (no history JSON beside the pickle)"
    source = summary.get("data_source", "?")
    rounds = run.get("rounds")
    return (
        f"{run.get('strategy', 'fedavg')}, {run.get('clients')} clients, {rounds} round{'' if rounds == 1 else 's'}, "
        f"{run.get('partition', 'iid')} partition, "
        f"data: {_SOURCE_NAMES.get(source, source)}, seed {run.get('seed')}"
    )


def main(argv: list[str] | None = None) -> None:
    """Redraw the plots of a saved history, or compare several runs' held-out accuracy."""
    from fedmnist.common.cli import Parser, run_cli
    from fedmnist.results.history import load_history

    parser = Parser(prog="python -m fedmnist.results.plots", description=main.__doc__)
    parser.add_argument("history", nargs="?", help="history/history_<rounds>.json (or the .pkl beside it)")
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="HISTORY",
        help="instead: overlay the held-out accuracy of these runs in one PNG (--out FILE, default comparison.png)",
    )
    parser.add_argument("--out", default=None, help="folder for the PNGs (default: plots/ beside history/)")
    args = parser.parse_args(argv)
    if bool(args.history) == bool(args.compare):
        parser.error("give one history to redraw, or --compare with two or more")

    def compare() -> None:
        runs = [(path, *load_history(path)) for path in args.compare]
        results = [
            {
                "setting": summary.get("name") or Path(path).stem,
                "curve": history.metrics_centralized.get("accuracy", []),
            }
            for path, history, summary in runs
        ]
        print(plot_comparison(results, "held-out accuracy per round", args.out or "comparison.png"))

    def redraw() -> None:
        history, summary = load_history(args.history)
        out = Path(args.out) if args.out else Path(args.history).resolve().parent.parent / "plots"
        paths = plot_history(history, summary, out)
        if summary.get("label_histograms"):
            paths.append(plot_label_histograms(summary, out))
        if client_curves(summary.get("rounds", [])):
            paths.append(plot_clients(summary, out))
        if summary.get("confusion"):
            paths.append(plot_confusion(summary["confusion"], summary, out))
        if privacy_curve(summary.get("rounds", [])):
            paths.append(plot_privacy(summary, out))
        for path in paths:
            print(path)

    run_cli(compare if args.compare else redraw)


if __name__ == "__main__":
    main(sys.argv[1:])
