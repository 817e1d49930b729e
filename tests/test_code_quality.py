"""Lint, layout and types: ``ruff check``, ``ruff format --check`` and ``mypy``, as pyproject.toml configures them."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from conftest import PROJECT_ROOT

CHECKED = ("fedmnist", "server.py", "client.py", "bench", "examples", "scripts", "tests")
# A module or function over these is hard to read whole: split it by what its parts do (docs/architecture.md).
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# mypy's cache outside the checkout, so that a fresh clone rechecks only the modules whose content
# differs from the last check on this machine (10.9 s -> 0.9 s here); mypy validates every entry.
MYPY_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fedmnist" / "mypy"


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
        [sys.executable, "-m", "mypy", "--cache-dir", str(MYPY_CACHE)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )  # Files and settings: pyproject.toml's [tool.mypy].
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def _app_modules() -> list[Path]:
    return [*sorted((PROJECT_ROOT / "fedmnist").rglob("*.py")), PROJECT_ROOT / "server.py", PROJECT_ROOT / "client.py"]


def test_no_module_of_the_app_is_longer_than_its_limit() -> None:
    lines = {path.relative_to(PROJECT_ROOT): len(path.read_text().splitlines()) for path in _app_modules()}
    assert {path: count for path, count in lines.items() if count > MAX_MODULE_LINES} == {}


def test_no_function_of_the_app_is_longer_than_its_limit() -> None:
    long = {}
    for path in _app_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {node.name}"] = length
    assert long == {}
