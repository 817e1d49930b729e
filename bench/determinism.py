"""What TensorFlow's op determinism costs: the default run and a simulation, with it and without it.

    .venv/bin/python bench/determinism.py [--repeats 3]

Alternates on this machine, ``--repeats`` times each: the default run (``./run.sh --dataset
mnist-5k``, 3 clients, 40 rounds, timed from the outside as ``bench/benchmark.py`` times it) and a
simulation of 20 clients, all trained, 10 rounds (``bench/simulation.py``'s app run), each once with
``FEDMNIST_OP_DETERMINISM=1`` (the default: ``tf.config.experimental.enable_op_determinism()`` in
every process that trains) and once with ``=0``. Prints the medians, their ratios, and each
setting's final weights checksums. Writes ``bench/results/determinism.json``;
docs/reproducibility.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from benchmark import RESULTS, run_fedmnist
from fedmnist.results.paths import RunPaths
from fedmnist.results.records import read_summary
from fedmnist.settings import defaults
from simulation import run_app

SIMULATION_CLIENTS, SIMULATION_ROUNDS = 20, 10  # Every client trains every round.


def measure(setting: str, folder: Path) -> dict:
    """One default run and one simulation with op determinism ``setting`` ("1" on, "0" off)."""
    os.environ[defaults.OP_DETERMINISM_VARIABLE] = setting
    default = run_fedmnist(defaults.ROUNDS, defaults.CLIENTS)
    default_checksum = read_summary(RunPaths(RESULTS / "fedmnist", defaults.ROUNDS).json)["weights_checksum"]
    out = folder / f"simulation-{setting}"
    simulation = run_app(SIMULATION_CLIENTS, SIMULATION_ROUNDS, 1.0, out)
    simulated = read_summary(RunPaths(out, SIMULATION_ROUNDS).json)
    return {
        "default_wall_seconds": default["wall_seconds"],
        "default_rounds_seconds": default["rounds_seconds"],
        "default_checksum": default_checksum,
        "simulation_wall_seconds": simulation["wall_seconds"],
        "simulation_round_seconds": simulation["later_round_seconds_median"],
        "simulation_checksum": simulated["weights_checksum"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"1": [], "0": []}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for setting in ("1", "0"):
                runs[setting].append(measure(setting, Path(folder) / str(repeat)))
                print(f"run {repeat + 1}, op determinism {setting}: {runs[setting][-1]}", flush=True)
    medians = {
        setting: {key: statistics.median(r[key] for r in found) for key in found[0] if "checksum" not in key}
        for setting, found in runs.items()
    }
    on, off = medians["1"], medians["0"]
    for key in on:
        print(f"{key}: {on[key]:.2f} on, {off[key]:.2f} off: {on[key] / off[key]:.3f}x")
    for kind in ("default", "simulation"):
        checksums = {setting: sorted({r[f"{kind}_checksum"] for r in found}) for setting, found in runs.items()}
        print(f"{kind} run's final checksums: on {checksums['1']}, off {checksums['0']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "determinism.json").write_text(json.dumps({"runs": runs, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
