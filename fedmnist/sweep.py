"""Experiment sweeps: several settings in a row, compared in one plot and one table.

``./run.sh sweep --grid heterogeneity`` runs every setting of the grid with the
same server and client processes: TensorFlow starts and the data loads once,
and between settings the server tells the clients to reconnect, and they
re-cut their rows for the next partition. Each setting's results go to
``OUT/sweep/<grid>/<setting>/`` as a normal run's would; the comparison goes to
``OUT/sweep/<grid>/comparison.png`` and ``comparison.md``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedmnist.archive import archive_earlier_results
from fedmnist.atomic import write_text_atomic
from fedmnist.errors import UserError

if TYPE_CHECKING:
    from fedmnist.settings import ServerSettings

log = logging.getLogger(__name__)

TARGET_ACCURACY = 0.90  # The table's "first round reaching" column.
PORT_FREE_TIMEOUT = 15.0  # Seconds to wait for the previous setting's server to release the port.


@dataclass(frozen=True)
class Setting:
    """One run of a sweep: a strategy under a partition."""

    strategy: str
    partition: str

    @property
    def name(self) -> str:
        return f"{self.strategy} {self.partition}"

    @property
    def folder(self) -> str:
        return f"{self.strategy}_{self.partition.replace(':', '-')}"


GRIDS: dict[str, tuple[Setting, ...]] = {
    # Label skew from none to pathological, with and without FedProx's proximal term.
    "heterogeneity": tuple(
        Setting(strategy, partition)
        for strategy in ("fedavg", "fedprox")
        for partition in ("iid", "dirichlet:0.5", "dirichlet:0.1", "shards:2")
    ),
    # Server-side momentum against the same skew.
    "momentum": tuple(
        Setting(strategy, partition) for strategy in ("fedavg", "fedavgm") for partition in ("iid", "dirichlet:0.1")
    ),
    # Two settings, for a quick look (and the tests).
    "quick": (Setting("fedavg", "iid"), Setting("fedavg", "shards:2")),
}


def sweep_root(out: str | Path, grid: str) -> Path:
    return Path(out) / "sweep" / grid


def setting_root(out: str | Path, grid: str, setting: Setting) -> Path:
    return sweep_root(out, grid) / setting.folder


def run_sweep(base: ServerSettings, grid: str, process_started: float) -> Path:
    """Run every setting of ``grid`` on the clients already connected; return the comparison table."""
    from fedmnist.server_run import run_server

    settings_list = GRIDS[grid]
    if not base.resume:
        archived = archive_earlier_results(base.out, (str(sweep_root(".", grid)),))
        if archived is not None:
            log.info("the earlier %s sweep was moved to %s", grid, archived)
    results = []
    for index, setting in enumerate(settings_list, start=1):
        settings = replace(
            base, strategy=setting.strategy, partition=setting.partition,
            out=str(setting_root(base.out, grid, setting)), keep_clients=index < len(settings_list),
        )
        _wait_for_free_port(settings.address)
        log.info("sweep %d/%d: %s", index, len(settings_list), setting.name)
        started = time.perf_counter()
        paths = run_server(settings, process_started if index == 1 else time.perf_counter())
        summary = json.loads(paths.json.read_text(encoding="utf-8"))
        results.append(_result(setting, summary, time.perf_counter() - started))
    return write_comparison(sweep_root(base.out, grid), grid, results)


def _wait_for_free_port(address: str) -> None:
    from flwr.supercore.address import is_port_in_use

    deadline = time.monotonic() + PORT_FREE_TIMEOUT
    while is_port_in_use(address):
        if time.monotonic() > deadline:
            raise UserError(f"{address} stayed busy after the previous setting; cannot start the next one")
        time.sleep(0.1)


def _result(setting: Setting, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    curve = summary["history"]["metrics_centralized"].get("accuracy", [])
    reached = [r for r, accuracy in curve if r > 0 and accuracy >= TARGET_ACCURACY]
    return {
        "setting": setting.name,
        "curve": curve,
        "final": curve[-1][1] if curve else float("nan"),
        "best": max((accuracy for r, accuracy in curve if r > 0), default=float("nan")),
        "first_round_at_target": reached[0] if reached else None,
        "seconds": seconds,
    }


def comparison_table(results: list[dict[str, Any]]) -> str:
    """The Markdown table: one row per setting."""
    lines = [
        f"| setting | final accuracy | best accuracy | first round >= {TARGET_ACCURACY:.0%} | wall time (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for result in results:
        first = result["first_round_at_target"]
        lines.append(
            f"| {result['setting']} | {result['final']:.3f} | {result['best']:.3f} | "
            f"{first if first is not None else 'not reached'} | {result['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def write_comparison(folder: Path, grid: str, results: list[dict[str, Any]]) -> Path:
    """``comparison.md``, ``comparison.json`` and ``comparison.png`` in ``folder``; returns the table's path."""
    from fedmnist.plots import plot_comparison

    table = folder / "comparison.md"
    write_text_atomic(table, f"# Sweep `{grid}`: held-out accuracy\n\n{comparison_table(results)}")
    write_text_atomic(folder / "comparison.json", json.dumps(results, indent=2) + "\n")
    plot_comparison(results, f"sweep {grid}: held-out accuracy per round", folder / "comparison.png")
    log.info("sweep comparison:\n%s", comparison_table(results))
    log.info("sweep table: %s, plot: %s", table, folder / "comparison.png")
    return table
