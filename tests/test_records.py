"""The typed records (fedmnist.results.records): what a real run writes has their shape, and every reader agrees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from conftest import FinishedRun
from fedmnist.common.errors import UserError
from fedmnist.dashboard import schemas
from fedmnist.results import records
from fedmnist.results.paths import RunPaths


def keys(kind: Any) -> set[str]:
    return set(kind.__required_keys__ | kind.__optional_keys__)


def test_the_dashboards_round_model_passes_on_renames_or_names_as_left_out_every_record_key() -> None:
    shared, renamed, left_out = schemas.SHARED_KEYS, set(schemas.RENAMED), schemas.LEFT_OUT
    assert shared | renamed | left_out == keys(records.RoundRecord)
    assert not (shared & renamed or shared & left_out or renamed & left_out)
    assert set(schemas.RENAMED.values()) <= set(schemas.RoundRecord.model_fields)
    # Every API field comes from the record: passed on, or renamed.
    assert set(schemas.RoundRecord.model_fields) == shared | set(schemas.RENAMED.values()) | schemas.DERIVED


def test_the_dashboards_privacy_model_has_the_records_fields() -> None:
    assert set(schemas.PrivacySpent.model_fields) == keys(records.PrivacySpent)


def test_the_api_passes_a_records_shared_numbers_on_unchanged() -> None:
    record: records.RoundRecord = {
        "round": 3,
        "connected_clients": 4,
        "fit_results": 3,
        "fit_failures": 1,
        "rejected_updates": 1,
        "seconds": 1.5,
        "loss_centralized": 0.25,
        "centralized": {"accuracy": 0.9, "backdoor_success": 0.25},
        "evaluate": {"accuracy": 0.8},
        "fit": {"loss": 0.5},
        "per_client": [
            {
                "cid": "a",
                "partition_id": 2,
                "fit": {"examples": 10},
                "evaluate": {"accuracy": 0.7},
                "update": {"norm": 1.5, "distance_to_median": 0.5, "cosine_to_median": -0.25, "defence": "discarded"},
            }
        ],
    }
    api = schemas.RoundRecord.from_record(record).model_dump()
    assert {key: api[key] for key in ("round", "connected_clients", "fit_results", "fit_failures", "seconds")} == {
        "round": 3,
        "connected_clients": 4,
        "fit_results": 3,
        "fit_failures": 1,
        "seconds": 1.5,
    }
    assert (api["accuracy_centralized"], api["accuracy_distributed"], api["fit_metrics"]) == (0.9, 0.8, {"loss": 0.5})
    assert api["rejected_updates"] == 1 and api["loss_centralized"] == 0.25 and api["backdoor_success"] == 0.25
    assert api["clients"][0] == {
        "name": "client 2",
        "partition_id": 2,
        "examples": 10,
        "fit_accuracy": None,
        "accuracy": 0.7,
        "loss": None,
        "update_norm": 1.5,
        "update_distance_to_median": 0.5,
        "update_cosine_to_median": -0.25,
        "defence": "discarded",
    }


NESTED: dict[Any, dict[str, Any]] = {
    records.Summary: {"initial": records.Evaluation, "rounds": records.RoundRecord, "privacy": records.PrivacySpent},
    records.RoundRecord: {"per_client": records.ClientEntry, "privacy": records.PrivacySpent},
    records.ClientEntry: {
        "fit": records.StageNumbers,
        "evaluate": records.StageNumbers,
        "update": records.UpdateNumbers,
    },
}


def shape_problems(value: Any, kind: Any, where: str) -> list[str]:
    """Where ``value`` strays from ``kind`` (a TypedDict): keys it does not declare, required keys missing."""
    if not isinstance(value, dict):
        return [f"{where} is {type(value).__name__}, not a record"]
    problems = [f"{where}.{key} is not a key of {kind.__name__}" for key in set(value) - set(get_type_hints(kind))]
    problems += [f"{where} lacks {key}" for key in kind.__required_keys__ if key not in value]
    for key, inner in NESTED.get(kind, {}).items():
        item = value.get(key)
        for number, entry in enumerate(item if isinstance(item, list) else [] if item is None else [item]):
            problems += shape_problems(entry, inner, f"{where}.{key}[{number}]")
    return problems


@pytest.mark.slow
@pytest.mark.smoke  # Reads the shared classic run: no run of its own.
def test_a_real_runs_summary_and_live_log_have_the_records_shapes(classic_run: FinishedRun) -> None:
    assert classic_run.result.returncode == 0, classic_run.result.stderr[-3000:]
    paths = RunPaths(classic_run.out, 2)
    summary = records.read_summary(paths.json)
    problems = shape_problems(summary, records.Summary, "summary")
    lines = [json.loads(line) for line in paths.round_log.read_text().splitlines()]
    problems += shape_problems(lines[0], records.Header, "header")
    problems += [
        problem
        for number, line in enumerate(lines)
        if "round" in line
        for problem in shape_problems(line, records.RoundRecord, f"live log line {number}")
    ]
    assert problems == []
    assert [record["round"] for record in summary["rounds"]] == [1, 2]
    assert {entry["partition_id"] for entry in summary["rounds"][-1]["per_client"]} == {0, 1, 2}


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read history"), ("{not json", "cannot read history"), ("[1, 2]", "is not a fedmnist history")],
)
def test_read_summary_refuses_a_missing_torn_or_foreign_file_in_one_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "history_3.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message) as refused:
        records.read_summary(path)
    assert "\n" not in str(refused.value)


def test_the_placement_line_counts_each_ray_nodes_fits() -> None:
    """Only fits count (an evaluation is no training), nodes in order; nothing to say without nodes."""
    entry = {"cid": "c", "fit": {"examples": 1}}
    rounds: list[Any] = [
        {"per_client": [{**entry, "node": "10.0.0.2"}, {**entry, "node": "10.0.0.1"}]},
        {"per_client": [{**entry, "node": "10.0.0.2"}, {"cid": "d", "node": "10.0.0.3", "evaluate": {"examples": 1}}]},
    ]
    assert (
        records.placement_line(rounds) == "virtual clients trained on 2 Ray nodes: 10.0.0.1 (1 fits), 10.0.0.2 (2 fits)"
    )
    without_nodes: list[Any] = [{"per_client": [entry]}]
    assert records.placement_line(without_nodes) == ""
