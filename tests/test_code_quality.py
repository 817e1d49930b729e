"""Lint, layout and types: ``ruff check``, ``ruff format --check`` and ``mypy``, as pyproject.toml configures them."""

from __future__ import annotations

import subprocess
import sys

from conftest import PROJECT_ROOT

CHECKED = ("fedmnist", "server.py", "client.py", "bench", "examples", "tests")


def test_ruff_check_finds_nothing() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *CHECKED], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_ruff_format_would_change_nothing() -> None:
    done = subprocess.run(
        [sys.executable, *["-m", "ruff", "format", "--check"], *CHECKED],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]  # Names the files to format.


def test_mypy_finds_no_type_errors() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300
    )  # Files and settings: pyproject.toml's [tool.mypy].
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
