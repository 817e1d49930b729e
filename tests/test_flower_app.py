"""The project as a Flower App: pyproject.toml, the run config and the ServerApp/ClientApp objects."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from conftest import PROJECT_ROOT
from fedmnist.common.errors import UserError
from fedmnist.runtimes.server_app import (
    flwr_resume_command,
    run_config_defaults,
    run_config_from,
    settings_from_run_config,
)
from fedmnist.settings.server_settings import ServerSettings

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def test_the_run_config_in_pyproject_has_server_pys_defaults() -> None:
    assert PYPROJECT["tool"]["flwr"]["app"]["config"] == run_config_defaults()
    assert settings_from_run_config(run_config_defaults(), "simulation") == ServerSettings(runtime="simulation")


def test_the_components_are_a_serverapp_and_a_clientapp() -> None:
    components = PYPROJECT["tool"]["flwr"]["app"]["components"]
    for key, kind in (("serverapp", ServerApp), ("clientapp", ClientApp)):
        module, name = components[key].split(":")
        assert isinstance(getattr(importlib.import_module(module), name), kind)


def test_the_dependencies_are_requirements_txts_pins() -> None:
    pins = {line.split("#")[0].strip() for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines()}
    listed = {re.sub(r"\[.*\]", "", dependency) for dependency in PYPROJECT["project"]["dependencies"]}
    assert listed == pins - {""}


def test_run_config_values_become_settings() -> None:
    settings = settings_from_run_config(
        {"rounds": 5, "model": "dense32", "learning-rate": 1, "name": "", "min-clients": 0, "data-home": "/data"},
        "deployment",
    )
    assert (settings.rounds, settings.model, settings.learning_rate, settings.runtime) == (
        5,
        "dense32",
        1.0,
        "deployment",
    )
    assert (settings.name, settings.min_clients, settings.data_home) == (None, None, "/data")  # "" and 0: not set.
    flags = {"rounds": 7, "clients": 4, "name": None, "min_clients": 2, "out": "/results", "port": 9}
    assert settings_from_run_config(run_config_from(flags), "deployment") == ServerSettings(
        rounds=7, clients=4, min_clients=2, out="/results", runtime="deployment"
    )


def test_a_run_flwr_started_is_continued_with_flwr_and_the_same_run_config() -> None:
    """The stop message of a ``flwr run`` ServerApp gives flwr's command, not the serverapp process's own."""
    run_config = {**run_config_defaults(), "rounds": 5, "model": "dense32", "out": "/r s", "keep-optimizer": True}
    arguments = shlex.split(flwr_resume_command(run_config))
    assert arguments[:-1] == ["./run.sh", "flwr", "run", ".", "--stream", "--run-config"]
    assert arguments[-1] == "rounds=5 out='/r s' model='dense32' keep-optimizer=true resume=true"  # TOML values.


@pytest.mark.parametrize(
    ("run_config", "message"),
    [
        ({"round": 5}, "unknown run config key(s) round"),
        ({"rounds": "5"}, "run config rounds = '5': expected a whole number"),
        ({"rounds": 2.5}, "expected a whole number"),
        ({"baseline": 1}, "expected true or false"),
        ({"rounds": True}, "expected a whole number"),
        ({"model": 3}, "expected a string"),
        ({"model": "resnet"}, "run config model = 'resnet': choose one of mlp, dense32, cnn"),
        ({"partition": "dirichlet:0"}, "run config partition = 'dirichlet:0': dirichlet alpha must be greater than 0"),
        ({"rounds": 0}, "run config rounds = 0: must be at least 1"),  # The flags' own checks, for every setting.
        ({"fraction-fit": 1.5}, "run config fraction-fit = 1.5: must be greater than 0 and at most 1"),
        (
            {"dataset": "imagenet"},
            "run config dataset = 'imagenet': choose one of auto, openml, mnist-5k, fashion-mnist or idx:DIR",
        ),
    ],
)
def test_bad_run_config_values_get_one_clear_error(run_config: dict, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        settings_from_run_config(run_config, "simulation")


def test_run_sh_hands_every_setting_to_server_py() -> None:
    """The launcher's server.py command is derived from ServerSettings: each flag arrives unchanged."""
    from dataclasses import fields

    import server
    from fedmnist.launch.commands import server_command
    from fedmnist.launch.flags import parse_args
    from fedmnist.launch.launcher import Launcher

    args = parse_args(
        [
            "--rounds",
            "7",
            "--min-clients",
            "2",
            "--name",
            "a b",
            "--baseline",
            "--partition",
            "shards:2",
            "--fraction-evaluate",
            "0.5",
            "--runtime",
            "simulation",
            "--learning-rate",
            "0.01",
            "--out",
            "relative/out",
        ]
    )
    launcher = Launcher(args)
    received = vars(server.parse_args(server_command(args, launcher.out, launcher.certs)[1:]))
    shared = [field.name for field in fields(ServerSettings) if hasattr(args, field.name)]
    assert len(shared) >= 20
    assert {name: received[name] for name in shared} == {
        **{name: getattr(args, name) for name in shared},
        "out": str(launcher.out),
    }


def test_run_sh_keeps_its_server_to_this_machine_unless_told_its_clients_are_elsewhere() -> None:
    import server
    from fedmnist.launch.commands import server_command
    from fedmnist.launch.flags import parse_args

    for flags, host in (([], "127.0.0.1"), (["--remote-clients"], "0.0.0.0")):
        command = server_command(parse_args(flags), Path("out"), Path("certs"))
        assert server.parse_args(command[1:]).host == host
    assert server.parse_args([]).host == "0.0.0.0"  # server.py alone: Flower's default, and a warning (end to end).


def test_each_setting_is_declared_once_and_every_interface_follows() -> None:
    """A ServerSettings field is the flag of server.py (and ./run.sh) and, where marked, a run config key."""
    from dataclasses import fields

    import server
    from fedmnist.launch.flags import parse_args
    from fedmnist.settings.server_settings import RUN, SERVER

    server_flags = set(vars(server.parse_args([])))
    launcher_flags = set(vars(parse_args([])))
    for field in fields(ServerSettings):
        flag = field.metadata["flag"]
        assert (field.name in server_flags) == (flag in (RUN, SERVER)), field.name
        assert (field.name in launcher_flags) == (flag == RUN), field.name
        if field.metadata["run_config"]:
            key = field.name.replace("_", "-")
            assert key in run_config_defaults(), field.name
            assert field.default is not None or field.metadata["none_as"] is not None, f"{field.name}: TOML has no None"
    assert set(vars(server.parse_args([]))) - {f.name for f in fields(ServerSettings)} == {"sweep", "verbose"}


@pytest.mark.slow  # Two `flwr build`s, one of which reads the whole project folder, .venv included.
def test_the_staged_app_is_the_bundle_flwr_builds_from_the_project(tmp_path: Path) -> None:
    """``./run.sh --runtime deployment`` runs ``flwr run`` on ``stage_app``'s copy: the same bundle, byte for byte."""
    import subprocess
    import sys

    from fedmnist.runtimes.deployment import environment, flower_command, stage_app

    built = {}
    for name, app in (("project", PROJECT_ROOT), ("staged", stage_app(PROJECT_ROOT, tmp_path))):
        (tmp_path / name).mkdir()
        done = subprocess.run(
            [sys.executable, flower_command("flwr"), "build", "--app", str(app)],
            cwd=tmp_path / name,
            env={**os.environ, **environment(tmp_path, None, None)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        [bundle] = (tmp_path / name).glob("*.fab")
        built[name] = (bundle.name, bundle.read_bytes())
    assert built["staged"] == built["project"]


def test_run_sh_flwr_run_of_the_project_bundles_a_staged_copy_and_passes_anything_else_on(tmp_path: Path) -> None:
    from fedmnist.runtimes.flwr_local import _with_staged_app

    staged = _with_staged_app(["run", str(PROJECT_ROOT), "--stream"], tmp_path)
    assert staged == ["run", str(tmp_path / "app"), "--stream"]
    assert (tmp_path / "app" / "pyproject.toml").read_bytes() == (PROJECT_ROOT / "pyproject.toml").read_bytes()
    for other in (["run", str(tmp_path / "elsewhere")], ["ls"], ["run"]):
        assert _with_staged_app(other, tmp_path / "unused") == other
