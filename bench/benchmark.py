"""Benchmark the default run against its targets and against the classic tutorial.

    .venv/bin/python bench/benchmark.py [--repeats 3] [--rounds 40]

Runs, side by side on this machine and in alternation:

1. ``./run.sh --dataset mnist-5k`` (the default run on the offline data), timed
   from the outside, with the breakdown taken from the run's own
   ``history_<rounds>.json``;
2. the classic-tutorial peer (``bench/peer_tutorial.py``: ``start_server`` and
   three clients calling ``model.fit``/``model.evaluate`` on the same rows);
3. the same model trained centrally on the union of the clients' training rows
   for the same number of epochs, for the accuracy comparison.

Prints a report, checks the targets (docs/performance.md) and writes
``bench/results/benchmark.json``. Exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedmnist.data.sources import MNIST_5K, load_mnist
from fedmnist.results.paths import RunPaths
from fedmnist.results.records import read_summary
from fedmnist.settings import defaults
from fedmnist.settings.server_settings import ServerSettings
from processes import free_port, start_quietly, wait_for_port

RESULTS = ROOT / "bench" / "results"


def run_fedmnist(rounds: int, clients: int) -> dict:
    """Time ./run.sh from the outside; return its own timings beside the wall time."""
    out = RESULTS / "fedmnist"
    started_at = time.time()
    began = time.perf_counter()
    subprocess.run(
        [
            "bash",
            str(ROOT / "run.sh"),
            "--rounds",
            str(rounds),
            "--clients",
            str(clients),
            "--port",
            str(free_port()),
            "--dashboard-port",
            str(free_port()),
            "--dataset",
            MNIST_5K,
            "--out",
            str(out),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - began
    summary = read_summary(RunPaths(out, rounds).json)
    timings, records = summary["timings"], summary["rounds"]

    def timing(key: str) -> float:
        value = timings[key]
        if value is None:  # Only a classic run measures them all.
            raise RuntimeError(f"the run's summary has no {key}")
        return value

    local = sum(r["client_fit_seconds"] + r["client_evaluate_seconds"] for r in records)
    startup = timing("first_round_started_at") - started_at
    measured = (
        *("server_startup_seconds", "client_startup_seconds", "client_data_seconds", "client_fit_seconds"),
        *("client_evaluate_seconds", "centralized_evaluate_seconds", "rounds_seconds"),
    )
    return {
        "wall_seconds": wall,
        "startup_seconds": startup,  # ./run.sh start until round 1 begins.
        **{key: timing(key) for key in measured},
        "slowest_client_fit_evaluate_seconds": local,
        "coordination_seconds_per_round": timing("coordination_seconds_per_round"),
        "wrap_up_seconds": wall - startup - timing("rounds_seconds"),
        "final_accuracy": summary["final"]["accuracy"],
    }


def run_peer(rounds: int, clients: int) -> dict:
    """Time the classic-tutorial run the same way: server, wait to listen, clients, wait for all."""
    port = str(free_port())
    peer = ROOT / "bench" / "peer_tutorial.py"
    began = time.perf_counter()
    server = start_quietly([sys.executable, str(peer), "server", port, str(rounds), str(clients)])
    wait_for_port(int(port), server)
    workers = [
        start_quietly(
            [sys.executable, str(peer), "client", port, str(i), str(clients)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for i in range(clients)
    ]
    codes = [p.wait() for p in [server, *workers]]
    if any(codes):
        raise RuntimeError(f"peer run failed: exit codes {codes}")
    return {"wall_seconds": time.perf_counter() - began}


def central_baseline(rounds: int, clients: int) -> dict:
    """The same model on the union of the clients' training rows, one epoch per round."""
    from fedmnist.server.baseline import train_centrally, union_of_client_rows

    data = load_mnist(MNIST_5K)
    curves = train_centrally(data, ServerSettings(clients=clients, rounds=rounds))
    rows = len(union_of_client_rows(data, clients, defaults.SEED)[1])
    return {"training_rows": rows, "epochs": rounds * defaults.LOCAL_EPOCHS, "accuracy": curves["accuracy"][-1][1]}


def report(runs: list[dict], peers: list[dict], central: dict) -> tuple[dict, list[tuple[str, bool, str]]]:
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    peer_wall = statistics.median(p["wall_seconds"] for p in peers)
    checks = [
        (
            "coordination overhead < 0.15 s/round",
            median["coordination_seconds_per_round"] < 0.15,
            f"{median['coordination_seconds_per_round']:.3f} s",
        ),
        (
            "client start to ready < 10 s",
            median["client_startup_seconds"] < 10,
            f"{median['client_startup_seconds']:.2f} s",
        ),
        (
            "data from the local cache < 1 s",
            median["client_data_seconds"] < 1,
            f"{median['client_data_seconds']:.3f} s",
        ),
        (
            "wall <= 1.3 x (start-up + slowest fit+evaluate)",
            median["wall_seconds"] <= 1.3 * (median["startup_seconds"] + median["slowest_client_fit_evaluate_seconds"]),
            (
                f"{median['wall_seconds']:.1f} s vs 1.3 x ({median['startup_seconds']:.1f} + "
                f"{median['slowest_client_fit_evaluate_seconds']:.1f}) = "
                f"{1.3 * (median['startup_seconds'] + median['slowest_client_fit_evaluate_seconds']):.1f} s"
            ),
        ),
        (
            "not slower than the classic tutorial",
            median["wall_seconds"] <= peer_wall,
            f"{median['wall_seconds']:.1f} s vs {peer_wall:.1f} s ({median['wall_seconds'] / peer_wall:.2f}x)",
        ),
        ("final held-out accuracy >= 93%", median["final_accuracy"] >= 0.93, f"{100 * median['final_accuracy']:.1f}%"),
        (
            "within 1 point of central training",
            abs(median["final_accuracy"] - central["accuracy"]) <= 0.01,
            f"{100 * median['final_accuracy']:.1f}% vs {100 * central['accuracy']:.1f}% central",
        ),
    ]
    return {
        "fedmnist_median": median,
        "fedmnist_runs": runs,
        "peer_runs": peers,
        "peer_wall_seconds": peer_wall,
        "central": central,
    }, checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating (default: 3)")
    parser.add_argument("--rounds", type=int, default=defaults.ROUNDS)
    parser.add_argument("--clients", type=int, default=defaults.CLIENTS)
    args = parser.parse_args()
    load_mnist(MNIST_5K)  # Fill the cache first, so neither side pays for it.
    runs, peers = [], []
    for repeat in range(args.repeats):
        runs.append(run_fedmnist(args.rounds, args.clients))
        peers.append(run_peer(args.rounds, args.clients))
        print(
            f"repeat {repeat + 1}/{args.repeats}: fedmnist {runs[-1]['wall_seconds']:.1f} s, "
            f"tutorial {peers[-1]['wall_seconds']:.1f} s",
            flush=True,
        )
    central = central_baseline(args.rounds, args.clients)
    results, checks = report(runs, peers, central)
    print(f"\nfedmnist default run (median of {args.repeats}):")
    for key, value in results["fedmnist_median"].items():
        print(f"  {key:38s} {value:8.3f}")
    print(f"  {'classic tutorial wall_seconds':38s} {results['peer_wall_seconds']:8.3f}")
    print(
        f"  {'central training accuracy':38s} {central['accuracy']:8.3f}  ({central['training_rows']} rows, {central['epochs']} epochs)"
    )
    print("\ntargets:")
    for name, passed, detail in checks:
        print(f"  [{'PASS' if passed else 'FAIL'}] {name}: {detail}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    results["checks"] = [{"target": n, "passed": p, "measured": d} for n, p, d in checks]
    (RESULTS / "benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(passed for _, passed, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
