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
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedmnist.common.atomic import write_text_atomic
from fedmnist.common.errors import UserError
from fedmnist.results.archive import archive_earlier_results
from fedmnist.results.records import Summary, read_summary
from fedmnist.settings import defaults

if TYPE_CHECKING:
    from fedmnist.settings.server_settings import ServerSettings

log = logging.getLogger(__name__)

TARGET_ACCURACY = 0.90  # The table's "first round reaching" column, unless the grid sets its own targets.
PORT_FREE_TIMEOUT = 15.0  # Seconds to wait for the previous setting's server to release the port.


@dataclass(frozen=True)
class Setting:
    """One run of a sweep: a strategy under a partition, optionally with its own model, local training and DP.

    Every field is a ``ServerSettings`` field; None leaves the sweep's own value.
    """

    strategy: str
    partition: str
    model: str | None = None  # None: the sweep's --model (and so on for those below).
    local_epochs: int | None = None
    batch_size: int | None = None
    dp_noise: float | None = None
    dp_clip: float | None = None
    attack: str | None = None
    malicious: float | None = None

    @property
    def name(self) -> str:
        extras = [
            self.model or "",
            f"E={self.local_epochs}" if self.local_epochs else "",
            f"B={self.batch_size}" if self.batch_size else "",
            f"noise={self.dp_noise:g}" if self.dp_noise else "",
            f"clip={self.dp_clip:g}" if self.dp_clip else "",
            f"{self.attack}" if self.attack else "",
            f"{self.malicious:.0%}" if self.malicious else "",
        ]
        return " ".join([self.strategy, self.partition, *filter(None, extras)])

    @property
    def folder(self) -> str:
        return "_".join(self.name.split()).replace(":", "-").replace("=", "").replace("%", "pc")

    def overrides(self) -> dict[str, Any]:
        """The run settings this setting fixes, as ``ServerSettings`` field values."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Grid:
    """Settings compared in one table, and the run settings the grid implies unless given as flags."""

    settings: tuple[Setting, ...]
    about: str  # One line for --help and the table's heading.
    defaults: Mapping[str, Any] = field(default_factory=dict)  # Launcher flag dests -> values.
    paper: bool = False  # Whether the table shows rounds to the paper's targets beside the paper's own.
    matrix: bool = False  # Whether the table is attack x defence (fedmnist.results.attack_table), not a row per run.


# McMahan et al. 2017 (Communication-Efficient Learning of Deep Networks from Decentralized Data), MNIST,
# 100 clients, C=0.1: rounds to 97% (2NN) or 99% (CNN) under (model, E, B, partition).
PAPER_ROUNDS: dict[tuple[str, int, int, str], int] = {
    ("2nn", 1, 10, "iid"): 87,
    ("2nn", 1, 10, "shards:2"): 664,
    ("cnn-paper", 1, 10, "iid"): 34,
    ("cnn-paper", 1, 10, "shards:2"): 350,
    ("cnn-paper", 5, 10, "iid"): 20,
    ("cnn-paper", 5, 10, "shards:2"): 229,
    ("cnn-paper", 20, 10, "iid"): 18,
    ("cnn-paper", 20, 10, "shards:2"): 173,
}
# The accuracy each model's rows count rounds to. MNIST: the paper's. Fashion-MNIST: 95% of the best
# held-out accuracy the same model reached trained centrally on the clients' 54,000 rows here
# (fedmnist.server.baseline, B=10, Adam, 10 epochs: 88.3% for the 2nn), to a whole point: 0.95 x 88.3 = 84%.
PAPER_TARGETS: dict[str, dict[str, float]] = {"mnist": {"2nn": 0.97, "cnn-paper": 0.99}, "fashion-mnist": {"2nn": 0.84}}
_PAPER_SCALE = {"runtime": "simulation", "clients": 100, "fraction_fit": 0.1, "fraction_evaluate": 0.1}

# The attacks grid: every defence against every attack of the catalogue, a fifth and a third of the
# clients malicious, under IID and Dirichlet(0.5) label skew; the no-attack row first (docs/robustness.md).
ATTACK_DEFENCES = ("fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan", "normclip", "centeredclip")
ATTACK_SHARES = (0.2, 0.33)


def _attack_settings() -> tuple[Setting, ...]:
    from fedmnist.attacks.catalogue import ATTACKS

    cells = [(None, None)] + [(attack, share) for attack in ATTACKS for share in ATTACK_SHARES]
    return tuple(
        Setting(defence, partition, attack=attack, malicious=share)
        for partition in ("iid", "dirichlet:0.5")
        for attack, share in cells
        for defence in ATTACK_DEFENCES
    )


GRIDS: dict[str, Grid] = {
    "heterogeneity": Grid(
        tuple(
            Setting(strategy, partition)
            for strategy in ("fedavg", "fedprox")
            for partition in ("iid", "dirichlet:0.5", "dirichlet:0.1", "shards:2")
        ),
        "label skew from none to pathological, with and without FedProx's proximal term",
    ),
    "momentum": Grid(
        tuple(
            Setting(strategy, partition) for strategy in ("fedavg", "fedavgm") for partition in ("iid", "dirichlet:0.1")
        ),
        "server-side momentum against the same skew",
    ),
    "quick": Grid((Setting("fedavg", "iid"), Setting("fedavg", "shards:2")), "two settings, for a quick look"),
    "strategies": Grid(
        tuple(Setting(strategy, "iid") for strategy in defaults.STRATEGIES),
        "every strategy the app offers, on the same IID data",
    ),
    "fedavg-paper": Grid(
        tuple(
            Setting("fedavg", partition, "2nn", epochs, 10) for epochs in (1, 5) for partition in ("iid", "shards:2")
        ),
        "the FedAvg paper's 2NN table: 100 clients, C=0.1, B=10, E=1 and 5, IID and 2 label shards each",
        {**_PAPER_SCALE, "rounds": 100},
        paper=True,
    ),
    "fedavg-paper-cnn": Grid(
        tuple(
            Setting("fedavg", partition, "cnn-paper", epochs, 10)
            for epochs in (1, 5)
            for partition in ("iid", "shards:2")
        ),
        "the same with the paper's CNN (1.7 million weights; here 31-33 s a round at E=1, 126-133 s at E=5)",
        {**_PAPER_SCALE, "rounds": 50},
        paper=True,
    ),
    "noniid": Grid(
        tuple(
            Setting(strategy, partition, "2nn", 1, 10)
            for partition in ("shards:2", "dirichlet:0.1")
            for strategy in ("fedavg", "fedprox", "fedavgm")
        ),
        "the non-IID gap at the paper's scale: fedavg, fedprox and fedavgm under 2 label shards and Dirichlet(0.1), "
        "2nn, E=1, B=10",
        {**_PAPER_SCALE, "rounds": 100},
        paper=True,
    ),
    "attacks": Grid(
        _attack_settings(),
        "attack x defence: held-out accuracy (and a backdoor's success) on Fashion-MNIST, 20 simulated clients, "
        "none, a fifth or a third of them malicious, IID and Dirichlet(0.5)",
        # 208 runs: 5 rounds each (and a fifth of the clients evaluating, which the table does not use)
        # keep the whole table to about half an hour here.
        {"runtime": "simulation", "clients": 20, "dataset": "fashion-mnist", "rounds": 5, "fraction_evaluate": 0.2},
        matrix=True,
    ),
    "dp": Grid(
        (
            Setting("fedavg", "iid"),
            *(
                Setting("fedavg", "iid", dp_noise=noise, dp_clip=clip)
                for clip in (0.1, 1.0)
                for noise in (0.1, 0.5, 1.0)
            ),
        ),
        "privacy against accuracy: FedAvg without and with differential privacy (noise multiplier, clipping norm, "
        "server-side clipping), 100 clients, C=0.1, 40 rounds",
        {**_PAPER_SCALE, "rounds": 40},
    ),
}


def target_for(data_source: str, model: str) -> float:
    """The accuracy rounds are counted to: the paper's models' own on ``data_source``, else TARGET_ACCURACY."""
    targets = PAPER_TARGETS["fashion-mnist" if data_source == "fashion-mnist" else "mnist"]
    return targets.get(model, TARGET_ACCURACY)


def sweep_root(out: str | Path, grid: str) -> Path:
    return Path(out) / "sweep" / grid


def setting_root(out: str | Path, grid: str, setting: Setting) -> Path:
    return sweep_root(out, grid) / setting.folder


def run_sweep(base: ServerSettings, grid: str, process_started: float) -> Path:
    """Run every setting of ``grid`` on the clients already connected; return the comparison table."""
    from fedmnist.runtimes.local import sweep_federations
    from fedmnist.server.run import run_server

    settings_list = GRIDS[grid].settings
    if not base.resume:
        archived = archive_earlier_results(base.out, (str(sweep_root(".", grid)),))
        if archived is not None:
            log.info("the earlier %s sweep was moved to %s", grid, archived)
    results = []
    with sweep_federations(base) as federation_for:
        for index, setting in enumerate(settings_list, start=1):
            settings = replace(
                base,
                **setting.overrides(),
                out=str(setting_root(base.out, grid, setting)),
                keep_clients=index < len(settings_list),
            )
            _wait_for_free_port(settings.address)
            log.info("sweep %d/%d: %s", index, len(settings_list), setting.name)
            started = time.perf_counter()
            started_at = process_started if index == 1 else time.perf_counter()
            paths = run_server(settings, started_at, federation_for(settings))
            summary = read_summary(paths.json)
            results.append(_result(setting, summary, time.perf_counter() - started, GRIDS[grid].paper))
    return write_comparison(sweep_root(base.out, grid), grid, results)


def _wait_for_free_port(address: str) -> None:
    from flwr.supercore.address import is_port_in_use

    deadline = time.monotonic() + PORT_FREE_TIMEOUT
    while is_port_in_use(address):
        if time.monotonic() > deadline:
            raise UserError(f"{address} stayed busy after the previous setting; cannot start the next one")
        time.sleep(0.1)


def _result(setting: Setting, summary: Summary, seconds: float, paper: bool = False) -> dict[str, Any]:
    """One row of the table, from the run's summary JSON (``history_N.json``); ``paper``: the paper's targets."""
    run = summary["config"]
    curve = summary["history"]["metrics_centralized"].get("accuracy", [])
    target = target_for(summary["data_source"], run["model"]) if paper else TARGET_ACCURACY
    reached = [r for r, accuracy in curve if r > 0 and accuracy >= target]
    trained = [accuracy for r, accuracy in curve if r > 0]
    paper_rounds = (
        PAPER_ROUNDS.get((run["model"], run["local_epochs"], run["batch_size"], run["partition"]))
        if run["strategy"] == "fedavg"
        else None
    )  # The paper ran FedAvg only.
    return {
        "setting": setting.name,
        "curve": curve,
        "final": curve[-1][1] if curve else float("nan"),
        "best": max(trained, default=float("nan")),
        # Under label skew the global model swings by points from round to round: this says more than the last.
        "last_10_mean": sum(trained[-10:]) / len(trained[-10:]) if trained else float("nan"),
        "target": target,
        "first_round_at_target": reached[0] if reached else None,
        "rounds": curve[-1][0] if curve else 0,
        "paper_rounds": paper_rounds,
        "strategy": run["strategy"],
        "partition": run["partition"],
        "attack": setting.attack,
        "malicious": setting.malicious,
        "backdoor_success": summary["rounds"][-1]["centralized"].get("backdoor_success") if summary["rounds"] else None,
        "epsilon": (summary.get("privacy") or {}).get("epsilon"),  # Spent by a differentially private run.
        "delta": (summary.get("privacy") or {}).get("delta"),
        "seconds": seconds,
    }


def comparison_table(results: list[dict[str, Any]], paper: bool = False) -> str:
    """The Markdown table: one row per setting; ``paper`` adds the target and the paper's rounds to it."""
    if paper:
        header = [
            "setting",
            "target",
            "rounds to target",
            "paper (MNIST)",
            "final accuracy",
            "mean of last 10",
            "best accuracy",
            "wall time (s)",
        ]
    else:
        header = [
            "setting",
            "final accuracy",
            "best accuracy",
            f"first round >= {TARGET_ACCURACY:.0%}",
            "wall time (s)",
        ]
    private = any(result.get("epsilon") is not None for result in results)
    if private:
        header.insert(1, "epsilon spent (delta)")
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for result in results:
        first = result["first_round_at_target"]
        reached = str(first) if first is not None else f"not in {result.get('rounds', '?')}"
        if paper:
            known = result["paper_rounds"]
            cells = [
                result["setting"],
                f"{result['target']:.0%}",
                reached,
                str(known) if known else "not reported",
                f"{result['final']:.3f}",
                f"{result['last_10_mean']:.3f}",
                f"{result['best']:.3f}",
                f"{result['seconds']:.1f}",
            ]
        else:
            cells = [
                result["setting"],
                f"{result['final']:.3f}",
                f"{result['best']:.3f}",
                reached,
                f"{result['seconds']:.1f}",
            ]
        if private:
            epsilon = result.get("epsilon")
            cells.insert(1, "no DP" if epsilon is None else f"{epsilon:.3g} ({result['delta']:g})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(folder: Path, grid: str, results: list[dict[str, Any]]) -> Path:
    """``comparison.md``, ``comparison.json`` and ``comparison.png`` in ``folder``; returns the table's path."""
    from fedmnist.results.attack_table import attack_table, plot_attack_heatmap
    from fedmnist.results.plots import plot_comparison, plot_privacy_utility

    table = folder / "comparison.md"
    matrix = GRIDS[grid].matrix
    markdown = attack_table(results) if matrix else comparison_table(results, GRIDS[grid].paper)
    write_text_atomic(table, f"# Sweep `{grid}`: held-out accuracy\n\n{GRIDS[grid].about}.\n\n{markdown}")
    write_text_atomic(folder / "comparison.json", json.dumps(results, indent=2) + "\n")
    if matrix:  # Hundreds of curves in one plot would show nothing: a heatmap instead.
        plot_attack_heatmap(results, f"sweep {grid}: final held-out accuracy", folder / "comparison.png")
    else:
        plot_comparison(results, f"sweep {grid}: held-out accuracy per round", folder / "comparison.png")
    if any(result.get("epsilon") is not None for result in results):
        plot_privacy_utility(results, f"sweep {grid}: final accuracy against the privacy spent", folder / "privacy.png")
    log.info("sweep comparison:\n%s", markdown)
    log.info("sweep table: %s, plot: %s", table, folder / "comparison.png")
    return table
