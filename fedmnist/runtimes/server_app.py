"""The ServerApp: Flower's entry point for the server on ``flwr run`` (Simulation and Deployment Runtime).

``app`` is what ``pyproject.toml`` names as the ``serverapp``. Its main
function reads the run's settings from the run config (``[tool.flwr.app.config]``
in ``pyproject.toml``, overridden with ``flwr run . --run-config "rounds=5"``)
and runs the same ``run_server`` as ``server.py``: update validation, records,
checkpoints, ``resume``, the live log the dashboard follows and the saved
results. Only the federation step differs: Flower's Grid instead of the
classic pair's gRPC server (``fedmnist.runtimes.grid.GridFederation``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import time
import warnings
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedmnist.common.cli import RESUME_COMMAND
from fedmnist.common.errors import UserError
from fedmnist.settings.server_settings import ServerSettings, flag_name, run_config_fields

log = logging.getLogger(__name__)

# Grids by the runtime that drives them.
GRID_RUNTIMES = {"InMemoryGrid": "simulation", "HttpGrid": "deployment"}

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation described by the run config through ``grid``, then save its results."""
    started = time.perf_counter()
    from fedmnist.common.cli import configure_logging
    from fedmnist.results.run_lock import lock_results
    from fedmnist.runtimes.grid import GridFederation
    from fedmnist.server.run import run_server

    configure_logging(verbose=bool(context.run_config.get("verbose", False)))
    # Started by flwr run itself, not by ./run.sh (which says how it was started): the stop message's
    # command to continue is flwr's, not this process's own command line.
    os.environ.setdefault(RESUME_COMMAND, flwr_resume_command(dict(context.run_config)))
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # Flower's simulation turns them all on.
    try:
        settings = settings_from_run_config(
            dict(context.run_config), GRID_RUNTIMES.get(type(grid).__name__, "deployment")
        )
        log.info("results go to %s", Path(settings.out).resolve())
        lock = lock_results(settings.out)  # Held for the run: one run per results folder.
        try:
            run_server(settings, started, GridFederation(grid, context, settings))
        finally:
            lock.release()
    except UserError as error:
        log.error("error: %s", error)  # One line; Flower marks the run failed.
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # SIGTERM or Ctrl-C: run_server saved the completed rounds and said so.
        raise SystemExit(130) from None


def run_config_defaults() -> dict[str, Any]:
    """The run config a ServerApp understands, with ``server.py``'s defaults: what ``pyproject.toml`` must hold.

    The settings are ``ServerSettings``' fields marked for the run config
    (``fedmnist.settings.server_settings``); the others are Flower's to decide under a Grid
    (the classic pair's address and TLS, the sweep's reconnect, the
    simulation's resources). TOML has no ``None``: a setting whose default is
    None (e.g. ``name``, ``min-clients``) is ``""`` or ``0`` there, and means the same.
    """
    config: dict[str, Any] = {}
    for field in run_config_fields():
        config[flag_name(field.name)] = field.metadata["none_as"] if field.default is None else field.default
    return {**config, "verbose": False}


def run_config_from(values: dict[str, Any]) -> dict[str, Any]:
    """The run config for settings given by field name (e.g. ``./run.sh``'s flags): the inverse of the below."""
    config = {}
    none_as = _none_as()
    for key, default in run_config_defaults().items():
        value = values.get(key.replace("-", "_"), default)
        config[key] = none_as.get(key) if value is None else value
    return config


def flwr_resume_command(run_config: dict[str, Any]) -> str:
    """``./run.sh flwr run . --stream --run-config "..."``: the settings that differ from the defaults, and resume."""
    defaults = run_config_defaults()
    changed = {key: value for key, value in run_config.items() if value != defaults.get(key) and key != "resume"}
    pairs = [f"{key}={_toml_value(value)}" for key, value in {**changed, "resume": True}.items()]
    return shlex.join(["./run.sh", "flwr", "run", ".", "--stream", "--run-config", " ".join(pairs)])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"'{value}'" if isinstance(value, str) else str(value)


def settings_from_run_config(run_config: dict[str, Any], runtime: str) -> ServerSettings:
    """``ServerSettings`` from a run config; one clear error for an unknown key or a value of the wrong type."""
    defaults = run_config_defaults()
    choices = {flag_name(f.name): f.metadata["choices"] for f in run_config_fields() if f.metadata["choices"]}
    checks = {
        flag_name(f.name): f.metadata["type"] for f in run_config_fields() if f.metadata["type"]
    }  # As the flags'.
    none_as = _none_as()
    unknown = sorted(set(run_config) - set(defaults))
    if unknown:
        raise UserError(f"unknown run config key(s) {', '.join(unknown)}; known: {', '.join(sorted(defaults))}")
    values: dict[str, Any] = {"runtime": runtime}
    for key, value in run_config.items():
        if key == "verbose":
            continue
        expected = defaults[key]
        allowed = (int, float) if isinstance(expected, float) else type(expected)
        if isinstance(expected, bool) != isinstance(value, bool) or not isinstance(value, allowed):
            raise UserError(f"run config {key} = {value!r}: expected {_KINDS[type(expected)]}")
        if key in choices and value not in choices[key]:
            raise UserError(f"run config {key} = {value!r}: choose one of {', '.join(choices[key])}")
        if key in none_as and value == none_as[key]:
            value = None
        elif key in checks:
            try:
                value = checks[key](str(value))
            except argparse.ArgumentTypeError as error:
                raise UserError(f"run config {key} = {value!r}: {error}") from None
        values[key.replace("-", "_")] = float(value) if isinstance(expected, float) and value is not None else value
    return ServerSettings(**values)


def _none_as() -> dict[str, Any]:
    """How the settings whose default is None appear in a run config (TOML has no None), by key."""
    return {flag_name(f.name): f.metadata["none_as"] for f in run_config_fields() if f.default is None}


_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
