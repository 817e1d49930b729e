"""The attacks sweep's table and heatmap: attack x defence -> final held-out accuracy (and a backdoor's success).

One table per partition: a row per attack and share of malicious clients (the
no-attack row first), a column per defence. A backdoor row's cells add the
backdoor's success rate on triggered held-out images, which the accuracy hides.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedmnist.results.figures import plt, save_figure

NO_ATTACK = "no attack"


def row_name(result: dict[str, Any]) -> str:
    """``no attack`` or ``sign-flip 20%``."""
    attack = result.get("attack")
    return f"{attack} {result['malicious']:.0%}" if attack else NO_ATTACK


def _ordered(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _cells(results: list[dict[str, Any]], partition: str) -> tuple[list[str], list[str], dict[tuple[str, str], dict]]:
    chosen = [r for r in results if r["partition"] == partition]
    rows, columns = _ordered([row_name(r) for r in chosen]), _ordered([r["strategy"] for r in chosen])
    return rows, columns, {(row_name(r), r["strategy"]): r for r in chosen}


def attack_table(results: list[dict[str, Any]]) -> str:
    """Markdown: per partition, attack rows x defence columns of final held-out accuracy."""
    parts = []
    for partition in _ordered([r["partition"] for r in results]):
        rows, columns, cells = _cells(results, partition)
        lines = [
            f"**{partition}**",
            "",
            "| attack | " + " | ".join(columns) + " |",
            "|" + " --- |" * (len(columns) + 1),
        ]
        for row in rows:
            shown = []
            for column in columns:
                cell = cells.get((row, column))
                if cell is None:
                    shown.append("")
                else:
                    backdoor = cell.get("backdoor_success")
                    shown.append(
                        f"{cell['final']:.3f}" + (f" (backdoor {backdoor:.2f})" if backdoor is not None else "")
                    )
            lines.append(f"| {row} | " + " | ".join(shown) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def plot_attack_heatmap(results: list[dict[str, Any]], title: str, path: str | Path) -> Path:
    """One heatmap per partition: final held-out accuracy by attack (rows) and defence (columns)."""
    partitions = _ordered([r["partition"] for r in results])
    figure, axes = plt.subplots(1, len(partitions), figsize=(7 * len(partitions), 7), dpi=110, squeeze=False)
    for axis, partition in zip(axes[0], partitions):
        rows, columns, cells = _cells(results, partition)
        values = np.array(
            [
                [cells[(row, column)]["final"] if (row, column) in cells else np.nan for column in columns]
                for row in rows
            ]
        )
        axis.imshow(values, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            if not np.isnan(value):
                axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7)
        axis.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
        axis.set_yticks(range(len(rows)), rows, fontsize=8)
        axis.set_title(partition, fontsize=10)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return save_figure(figure, Path(path))
