"""Same seed, same run: two real runs with the same flags write the same numbers, bit for bit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import HUNDRED_CLIENTS_ROUNDS, FinishedRun, classic_run_flags, numbers, run_sh
from fedmnist.attacks.catalogue import malicious_partitions
from fedmnist.model.checksum import weights_checksum
from fedmnist.results.live_log import read_live_log
from fedmnist.results.paths import RunPaths
from fedmnist.results.records import read_summary
from fedmnist.settings.reproducibility import reproducibility
from fedmnist.settings.server_settings import ServerSettings


@pytest.mark.slow  # A second whole run beside the session's classic one.
def test_two_classic_runs_with_the_same_seed_write_the_same_rounds_and_model(
    classic_run: FinishedRun, tmp_path: Path, data_home: str
) -> None:
    again = run_sh(*classic_run_flags(tmp_path, data_home))
    assert again.returncode == 0, again.stderr
    first, second = (read_summary(RunPaths(out, 2).json) for out in (classic_run.out, tmp_path))
    assert [numbers(r) for r in first["rounds"]] == [numbers(r) for r in second["rounds"]]
    assert [r["loss_distributed"] for r in first["rounds"]] == [r["loss_distributed"] for r in second["rounds"]]
    assert first["initial"] == {**second["initial"], "centralized_seconds": first["initial"]["centralized_seconds"]}
    assert first["weights_checksum"] == second["weights_checksum"] == first["rounds"][-1]["weights_checksum"]
    assert first["rounds"][0]["weights_checksum"] != first["rounds"][1]["weights_checksum"]  # The model moved.


@pytest.mark.slow  # A simulation (shared with the SIGTERM test, whose resumed run must equal it).
def test_a_simulation_of_a_hundred_clients_samples_a_tenth_by_the_seed_and_says_it_is_reproducible(
    hundred_clients_run: FinishedRun,
) -> None:
    """100 virtual clients, a tenth sampled for each stage of each round by the run's seed.

    ``tests/test_runtimes.py``'s SIGTERM test stops the same run and resumes it: its records and
    model must equal these, bit for bit (a second run, and a resumed one, give the same run).
    """
    done = hundred_clients_run.result
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    summary = read_summary(RunPaths(hundred_clients_run.out, HUNDRED_CLIENTS_ROUNDS).json)
    rounds = summary["rounds"]
    assert [(r["fit_results"], r["evaluate_results"], r["connected_clients"]) for r in rounds] == [(10, 10, 100)] * 4
    cohorts = [sorted(c["partition_id"] for c in r["per_client"] if "fit" in c) for r in rounds]
    evaluated = sorted(c["partition_id"] for c in rounds[0]["per_client"] if "evaluate" in c)
    assert [len(set(cohort)) for cohort in cohorts] == [10] * 4 and len({tuple(c) for c in cohorts}) == 4
    assert len(set(evaluated)) == 10 and all(0 <= p < 100 for p in cohorts[0] + evaluated)
    assert rounds[-1]["centralized"]["accuracy"] > rounds[0]["centralized"]["accuracy"] - 0.05
    # The attackers the seed drew stand out: their updates point away from the round's mean.
    attackers = malicious_partitions(100, 0.1, 42)
    updates = [(c["partition_id"] in attackers, c["update"]) for r in rounds for c in r["per_client"] if "fit" in c]
    assert len(updates) == 40 and all("defence" in update for _, update in updates)
    assert sum(attacker for attacker, _ in updates) >= 2
    assert all((update["cosine_to_median"] < 0) == attacker for attacker, update in updates), updates
    warm_up = summary["timings"]["client_warm_up_seconds"]
    assert warm_up is not None and warm_up > 0  # The worker was warmed up before round 1.
    assert summary["reproducibility"]["reproducible"] is True


@pytest.mark.slow
@pytest.mark.smoke  # Reads the shared classic run: no run of its own.
def test_the_checksum_names_the_saved_model_and_ends_the_last_round_line(classic_run: FinishedRun) -> None:
    import keras

    summary = read_summary(RunPaths(classic_run.out, 2).json)
    saved = keras.saving.load_model(RunPaths(classic_run.out, 2).model).get_weights()
    assert weights_checksum(saved) == summary["weights_checksum"]
    [last] = [line for line in classic_run.result.stdout.splitlines() if "round 2/2 |" in line]
    assert f"| weights {summary['weights_checksum']} |" in last
    assert not [line for line in classic_run.result.stdout.splitlines() if "round 1/2 |" in line and "weights" in line]
    header = read_live_log(RunPaths(classic_run.out, 2).round_log).header
    assert summary["reproducibility"] == header["reproducibility"] == reproducibility(ServerSettings())
    assert summary["reproducibility"]["reproducible"] is True


def test_the_same_weights_have_one_checksum_and_any_change_gives_another() -> None:
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]
    checksum = weights_checksum(weights)
    assert len(checksum) == 12 and int(checksum, 16) >= 0
    assert weights_checksum([w.astype(w.dtype.newbyteorder(">")) for w in weights]) == checksum  # Byte order.
    assert weights_checksum([np.asfortranarray(weights[0]), weights[1]]) == checksum  # Memory layout.
    flipped = weights[1].copy()
    flipped.view(np.uint32)[0] ^= 1  # One bit of one weight.
    others: list[list[np.ndarray]] = [
        [weights[0], flipped],
        [weights[0].reshape(3, 2), weights[1]],
        [weights[0].astype(np.float64), weights[1]],
    ]
    assert len({checksum, *(weights_checksum(w) for w in others)}) == 4


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"dp_noise": 1.0, "dp_clip": 1.0}, "differential privacy: its noise stays random"),
        ({"secagg": True}, "SecAgg+: its masks are random by design"),
        ({"ws_clients": 1}, "WebSocket clients: they train their own way"),
    ],
)
def test_each_limit_makes_a_run_not_reproducible_and_says_why(changes: dict[str, Any], why: str) -> None:
    said = reproducibility(replace(ServerSettings(), **changes))
    assert said["reproducible"] is False and why in said["why"]


@pytest.mark.parametrize("runtime", ["classic", "simulation", "deployment"])
def test_every_runtime_is_reproducible_without_dp_noise_or_secagg(runtime: str) -> None:
    assert reproducibility(replace(ServerSettings(), runtime=runtime))["reproducible"] is True
