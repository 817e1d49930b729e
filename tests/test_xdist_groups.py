"""./test.sh runs two xdist workers; the tests reading one shared run must land on one worker (conftest)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import shared_run_groups


def test_tests_sharing_a_run_share_a_group_and_a_test_reading_two_runs_joins_their_groups() -> None:
    groups = shared_run_groups(
        {
            "smoke": {"classic_run", "data_home"},
            "sweep": {"simulated_strategies"},
            "compare": {"simulated_strategies", "classic_run"},
            "hundred": {"hundred_clients_run", "tmp_path"},
            "unit": {"data_home", "tmp_path"},
        }
    )
    assert groups == {
        "smoke": "classic_run",
        "sweep": "classic_run",
        "compare": "classic_run",
        "hundred": "hundred_clients_run",
    }


def test_xdist_sends_the_tests_of_a_group_marked_at_collection_to_one_worker(tmp_path: Path) -> None:
    """The way conftest marks groups (``xdist_group`` added in ``pytest_collection_modifyitems``), checked
    on four grouped tests: without grouping xdist deals them out to both workers (pytest 9.2 with xdist
    3.8 did so silently, pytest-xdist#1386, and each worker then made the shared runs again)."""
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent("""
            import pytest

            @pytest.hookimpl(tryfirst=True)
            def pytest_collection_modifyitems(items):
                for item in items:
                    item.add_marker(pytest.mark.xdist_group("shared"))
        """)
    )
    (tmp_path / "test_grouped.py").write_text(
        textwrap.dedent("""
            import os, time
            import pytest

            @pytest.mark.parametrize("n", range(4))
            def test_grouped(n):
                time.sleep(0.2)
                with open("workers.txt", "a") as handle:
                    handle.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
        """)
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    workers = (tmp_path / "workers.txt").read_text().split()
    assert len(workers) == 4 and len(set(workers)) == 1, workers
