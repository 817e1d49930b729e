"""Graphs of a run: accuracy and loss per round, privacy spent, and runs compared (the clients': ``client_plots``).

Regenerate them from any saved history::

    python -m fedmnist.results.plots history/history_40.pkl [--out plots/]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from flwr.server.history import History
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedmnist.results.client_plots import client_curves, plot_clients, plot_confusion, plot_label_histograms
from fedmnist.results.figures import describe_run, plt, save_figure
from fedmnist.results.records import RoundRecord, Summary

# File stem: (metric key, y-axis label).
_HISTORY_FIGURES = {"accuracy": ("accuracy", "accuracy"), "loss": ("loss", "cross-entropy loss")}
# What each curve is, in the words the legend uses.
HELD_OUT = "held-out test set (server, global model)"
VALIDATION = "clients' validation slices (weighted average)"
TRAINING = "clients' training, during local fit (weighted average)"
BASELINE = "central training, same rows and epochs (held-out)"
ZOOM_FROM = 0.5  # The zoomed panel shows the last half of the rounds, where the curves differ.


def plot_history(history: History, summary: Summary, out_dir: str | Path) -> list[Path]:
    """Draw ``accuracy.png`` and ``loss.png`` into ``out_dir``; return their paths.

    Each has the global model on the server's held-out test set (round 0 being
    the initial model), the clients' validation and training metrics (weighted
    by examples), and the centralized baseline when the run made one
    (``--baseline``). The best held-out round is marked; a second panel zooms
    into the last half of the rounds, which the first round's jump would
    otherwise squash into a sliver at the top.
    """
    return [plot_history_figure(history, summary, stem, out_dir) for stem in _HISTORY_FIGURES]


def plot_history_figure(history: History, summary: Summary, stem: str, out_dir: str | Path) -> Path:
    """Draw one of ``plot_history``'s figures: ``accuracy.png`` or ``loss.png``."""
    key, label = _HISTORY_FIGURES[stem]
    return save_figure(history_figure(history, summary, key, label), Path(out_dir) / f"{stem}.png")


def run_figures(summary: Summary) -> list[str]:
    """The names of the figures ``draw_figure`` draws for a run with this summary, in the order they are listed."""
    records = summary.get("rounds", [])
    return [
        *_HISTORY_FIGURES,
        *(["label_histogram"] if summary.get("label_histograms") else []),
        *(["clients"] if client_curves(records) else []),
        *(["confusion"] if summary.get("confusion") else []),
        *(["privacy"] if privacy_curve(records) else []),
    ]


def draw_figure(name: str, history: History, summary: Summary, out_dir: str | Path) -> Path:
    """Draw the figure ``name`` (one of ``run_figures``) of a run into ``out_dir``; return its path."""
    if name in _HISTORY_FIGURES:
        return plot_history_figure(history, summary, name, out_dir)
    if name == "label_histogram":
        return plot_label_histograms(summary, out_dir)
    if name == "clients":
        return plot_clients(summary, out_dir)
    if name == "confusion" and (confusion := summary.get("confusion")):
        return plot_confusion(confusion, summary, out_dir)
    if name == "privacy":
        return plot_privacy(summary, out_dir)
    raise ValueError(f"no figure {name!r} for this run")


def history_figure(history: History, summary: Summary, key: str, label: str) -> Figure:
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


def _draw_series(axes: Any, series: list[tuple[str, str, list]], summary: Summary, best: Any) -> None:
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


def privacy_curve(records: list[RoundRecord]) -> list[tuple[int, float, float]]:
    """``[(round, epsilon spent, held-out accuracy), ...]`` of a differentially private run's rounds."""
    return [
        (r["round"], r["privacy"]["epsilon"], r["centralized"]["accuracy"])
        for r in records
        if r.get("privacy") and "accuracy" in r.get("centralized", {})
    ]


def plot_privacy(summary: Summary, out_dir: str | Path) -> Path:
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
    records = summary.get("rounds") or []
    spent = summary.get("privacy") or (records[-1].get("privacy") if records else None) or {}
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
    return save_figure(figure, Path(out_dir) / "privacy.png")


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
    return save_figure(figure, Path(path))


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
    return save_figure(figure, Path(path))


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
        for name in run_figures(summary):
            print(draw_figure(name, history, summary, out))

    run_cli(compare if args.compare else redraw)


if __name__ == "__main__":
    main(sys.argv[1:])
