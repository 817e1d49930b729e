"""Which aggregation the default run should use: each candidate with and without each attack.

    .venv/bin/python bench/robust_default.py [--strategies fedavg,fedmedian,centeredclip] [--rounds 40]

Runs the default run (``./run.sh --dataset mnist-5k``: 3 clients, 40 rounds, classic) once per
candidate strategy without attackers (IID and Dirichlet 0.5), then under each attack of the
catalogue with a third of the clients malicious (``--malicious 0.34``: 1 of 3), IID. Prints the
table of final held-out accuracies (and the backdoor's success), the points each costs against
plain FedAvg without attackers, and the targets of issue 28: attack-free within 0.5 points of
FedAvg, every attack within 3 points of the same strategy's attack-free run. Writes
``bench/results/robust_default.json``; docs/robustness.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from benchmark import RESULTS, ROOT
from fedmnist.attacks.catalogue import ATTACKS
from fedmnist.data.sources import MNIST_5K
from fedmnist.results.paths import RunPaths
from fedmnist.results.records import read_summary
from fedmnist.settings import defaults
from processes import free_port

NO_ATTACK = ("none", "iid"), ("none", "dirichlet:0.5")


def run(strategy: str, attack: str, partition: str, rounds: int, out: Path) -> dict:
    """One default run of ``strategy`` under ``attack`` (a third of the clients) and ``partition``."""
    flags = ["--attack", attack, "--malicious", "0.34"] if attack != "none" else []
    began = time.perf_counter()
    done = subprocess.run(
        [
            "bash",
            str(ROOT / "run.sh"),
            *("--strategy", strategy, "--partition", partition, "--rounds", str(rounds)),
            *("--dataset", MNIST_5K, "--out", str(out), "--port", str(free_port())),
            *("--dashboard-port", str(free_port()), *flags),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    summary = read_summary(RunPaths(out, rounds).json)
    centralized = summary["rounds"][-1]["centralized"]
    return {
        "accuracy": centralized["accuracy"],
        "backdoor_success": centralized.get("backdoor_success"),
        "seconds": time.perf_counter() - began,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--strategies", default="fedavg,fedmedian,centeredclip,normclip")
    parser.add_argument("--rounds", type=int, default=defaults.ROUNDS)
    args = parser.parse_args()
    cells = [*NO_ATTACK, *((attack, "iid") for attack in ATTACKS)]
    results: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for strategy in args.strategies.split(","):
            for attack, partition in cells:
                key = f"{attack} {partition}"
                found = run(strategy, attack, partition, args.rounds, Path(folder) / strategy / key.replace(":", ""))
                results.setdefault(strategy, {})[key] = found
                print(f"{strategy:14} {key:24} {found}", flush=True)
    reference = {key: results["fedavg"][key]["accuracy"] for key in ("none iid", "none dirichlet:0.5")}
    print("\nstrategy        attack-free cost (iid, dir0.5)   worst attack drop (iid)")
    for strategy, found in results.items():
        costs = [reference[key] - found[key]["accuracy"] for key in reference]
        drops = {a: found["none iid"]["accuracy"] - found[f"{a} iid"].get("accuracy", 0.0) for a in ATTACKS}
        worst = max(drops, key=lambda attack: drops[attack])
        verdict = "PASS" if max(costs) <= 0.005 and drops[worst] <= 0.03 else "MISS"
        print(f"{strategy:14} {costs[0]:+.3f} {costs[1]:+.3f}   {worst} {drops[worst]:+.3f}   {verdict}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "robust_default.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
