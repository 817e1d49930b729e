"""Graphs of a run: accuracy and loss per round, clients' average vs held-out test.

Regenerate them from any saved history::

    python -m fedmnist.plots history/history_40.pkl [--out plots/]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # Files only; no display needed.
import matplotlib.pyplot as plt  # noqa: E402
from flwr.server.history import History  # noqa: E402

from fedmnist.atomic import atomic_path  # noqa: E402

_SOURCE_NAMES = {"mnist-5k": "mnist-5k (offline 5,000-image subset)", "openml": "OpenML mnist_784"}
# (file stem, metric key, y-axis label)
_FIGURES = (("accuracy", "accuracy", "accuracy"), ("loss", "loss", "cross-entropy loss"))


def plot_history(history: History, summary: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Draw ``accuracy.png`` and ``loss.png`` into ``out_dir``; return their paths.

    Each has the distributed curve (clients' validation metrics, averaged
    weighted by examples) and the centralized curve (the global model on the
    server's held-out test set, round 0 being the initial model), plus the
    centralized baseline when the run made one (``--baseline``).
    """
    out_dir = Path(out_dir)
    written = []
    for stem, key, label in _FIGURES:
        figure, axes = plt.subplots(figsize=(8, 5), dpi=110)
        for name, style, series in (
            ("clients (weighted average)", "o-", history.metrics_distributed.get(key, [])),
            ("held-out test (centralized)", "s-", history.metrics_centralized.get(key, [])),
            ("central training, same rows and epochs (held-out)", "--", summary.get("baseline", {}).get(key, [])),
        ):
            if series:
                rounds, values = zip(*series)
                axes.plot(rounds, values, style, markersize=3, label=f"{name}: {values[-1]:.3f} at round {rounds[-1]}")
        failed = [r["round"] for r in summary.get("rounds", []) if r.get("fit_failures") or r.get("evaluate_failures")]
        for index, server_round in enumerate(failed):
            axes.axvline(server_round, color="red", alpha=0.25, linewidth=4,
                         label="round with client failures" if index == 0 else None)
        axes.set_xlabel("round")
        axes.set_ylabel(label)
        axes.set_title(f"{label} per round\n{describe_run(summary)}", fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path = out_dir / f"{stem}.png"
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png")
        plt.close(figure)
        written.append(path)
    return written


def plot_label_histograms(summary: dict[str, Any], out_dir: str | Path) -> Path:
    """Draw ``label_histogram.png``: one stacked bar per client, one colour per digit.

    Under ``iid`` every bar has about the same mix; under ``dirichlet:0.1`` or
    ``shards:2`` most bars are one or two colours: the label skew clients train on.
    """
    histograms = summary.get("label_histograms") or []
    figure, axes = plt.subplots(figsize=(max(9, 0.5 * len(histograms) + 4), 5), dpi=110)
    clients = [str(i) for i in range(len(histograms))]
    bottom = [0] * len(histograms)
    colours = plt.get_cmap("tab10")
    for digit in range(10):
        counts = [row[digit] for row in histograms]
        axes.bar(clients, counts, bottom=bottom, color=colours(digit), label=str(digit))
        bottom = [b + c for b, c in zip(bottom, counts)]
    axes.set_xlabel("client (partition id)")
    axes.set_ylabel("examples (training + validation)")
    axes.set_title(f"labels per client\n{describe_run(summary)}", fontsize=10)
    axes.legend(title="digit", bbox_to_anchor=(1.01, 1), loc="upper left")
    figure.tight_layout()
    path = Path(out_dir) / "label_histogram.png"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path


def plot_comparison(results: list[dict[str, Any]], title: str, path: str | Path) -> Path:
    """One held-out accuracy curve per setting of a sweep, in one figure."""
    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=110)
    for result in results:
        if result["curve"]:
            rounds, values = zip(*result["curve"])
            axes.plot(rounds, values, "-", marker=".", markersize=3, label=f"{result['setting']}: {values[-1]:.3f}")
    axes.set_xlabel("round")
    axes.set_ylabel("held-out accuracy")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return Path(path)


def describe_run(summary: dict[str, Any]) -> str:
    """One line for plot titles: strategy, clients, rounds, data source, seed."""
    run = summary.get("config", {})
    if not run:
        return "settings unknown (no history JSON beside the pickle)"
    source = summary.get("data_source", "?")
    return (
        f"{run.get('strategy', 'fedavg')}, {run.get('clients')} clients, {run.get('rounds')} rounds, {run.get('partition', 'iid')} partition, "
        f"data: {_SOURCE_NAMES.get(source, source)}, seed {run.get('seed')}"
    )


def main(argv: list[str] | None = None) -> None:
    """Redraw the plots of a saved history (.pkl or .json)."""
    from fedmnist.cli import Parser, run_cli
    from fedmnist.history import load_history

    parser = Parser(prog="python -m fedmnist.plots", description=main.__doc__)
    parser.add_argument("history", help="history/history_<rounds>.pkl or .json")
    parser.add_argument("--out", default=None, help="folder for the PNGs (default: plots/ beside history/)")
    args = parser.parse_args(argv)

    def redraw() -> None:
        history, summary = load_history(args.history)
        out = Path(args.out) if args.out else Path(args.history).resolve().parent.parent / "plots"
        paths = plot_history(history, summary, out)
        if summary.get("label_histograms"):
            paths.append(plot_label_histograms(summary, out))
        for path in paths:
            print(path)

    run_cli(redraw)


if __name__ == "__main__":
    main(sys.argv[1:])
