"""Lint: ``ruff check`` over every Python file, as pyproject.toml configures it."""

from __future__ import annotations

import subprocess
import sys

from conftest import PROJECT_ROOT

CHECKED = ("fedmnist", "server.py", "client.py", "bench", "examples", "tests")


def test_ruff_check_finds_nothing() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", *CHECKED], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
