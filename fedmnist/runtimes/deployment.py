"""The Deployment Runtime on this machine: a SuperLink, one SuperNode per client, and ``flwr run``.

``./run.sh --runtime deployment`` starts what a real deployment runs on many
machines, here as local processes (``fedmnist.launch.launcher`` starts and stops them):

- ``flower-superlink`` on ``--port``: one HTTP API for the SuperNodes, the
  ServerApp and the ``flwr`` CLI. It starts the ServerApp (``fedmnist.runtimes.server_app``)
  in a ``flwr-serverapp`` process of its own when the run is submitted.
- ``flower-supernode`` for each partition (run by ``prompt_supernode.py``, which
  shortens its idle wait), with ``--node-config "partition-id=I num-partitions=N"``;
  it starts a ``flwr-clientapp`` process (``fedmnist.client.client_app``; a lighter
  start, ``light_clientapp.py``) for every message it receives, and the first that
  trains starts the node's warm trainer for the run (``fedmnist.client.warm_trainer``).
- ``flwr run <project> <connection> --run-config <file> --stream``, which
  submits this project as a Flower App with the run's settings and streams the
  ServerApp's output until the run ends.

Everything Flower keeps (the SuperLink connection, the installed app bundle)
lives in a temporary ``FLWR_HOME`` that is removed afterwards, so a run never
touches ``~/.flwr``.

Every connection is TLS (the development CA and certificate of ``OUT/certs``,
as ``./run.sh certs`` makes them), and the SuperLink runs with SuperNode
authentication: only SuperNodes whose public key was registered
(``register_command``, before they start) may connect, each with its private
key from ``OUT/keys`` (``fedmnist.launch.node_keys``). A SuperNode with any other key
logs ``SUPERNODE_REFUSED`` and exits.
"""

from __future__ import annotations

import os
import sys
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedmnist.results.run_lock import ResultsLock

CONNECTION = "fedmnist-local"  # The SuperLink connection's name in FLWR_HOME/config.toml.
# What a SuperNode logs when the SuperLink does not let it in (an unregistered key) before it exits with
# status 1: Flower's exit code 305, "Failed to activate SuperNode".
SUPERNODE_REFUSED = "Exit Code: 305"


def environment(home: Path, lock: ResultsLock | None, data_home: str | None) -> dict[str, str]:
    """Environment entries for the Flower processes of a run whose Flower files live in ``home``."""
    from fedmnist.data.sources import DATA_HOME_VARIABLE
    from fedmnist.results.run_lock import holder_environment

    return {
        **(
            {DATA_HOME_VARIABLE: data_home} if data_home else {}
        ),  # For the ClientApps (the server's is in the run config).
        "FLWR_HOME": str(home),
        # The SuperLink and SuperNodes start Flower's other commands by name; a lighter flwr-clientapp comes first.
        "PATH": os.pathsep.join([str(home / "bin"), str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        # Runtime dependency installation would `uv sync` a fresh environment for every run
        # (10 s, measured); the project's environment already has everything.
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",  # No network here; and it would print on every command.
        # A SuperNode's helper asks it for a message to start a ClientApp for every second by default
        # (Flower's setting): half a second late per message on average. Each ask is a local call.
        "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.25",
        **(holder_environment(lock) if lock else {}),
    }


def flower_command(name: str) -> str:
    """The path of a Flower console script (``flower-superlink``, ``flwr``) in this Python's environment."""
    return str(Path(sys.executable).parent / name)


def superlink_command(port: int, certs: Path) -> list[str]:
    """The SuperLink on ``port``: TLS with ``certs``' files, only registered SuperNodes let in."""
    return [
        flower_command("flower-superlink"),
        "--ssl-ca-certfile",
        str(certs / "ca.pem"),
        "--ssl-certfile",
        str(certs / "server.pem"),
        "--ssl-keyfile",
        str(certs / "server.key"),
        "--enable-supernode-auth",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]


def supernode_command(
    superlink_port: int, runtime_port: int, partition_id: int, num_partitions: int, certs: Path, private_key: Path
) -> list[str]:
    """The SuperNode of ``partition_id``: it trusts ``certs``' CA and signs its requests with ``private_key``.

    Flower's SuperNode, run by ``prompt_supernode.py`` (a shorter wait while idle).
    """
    return [
        str(Path(__file__).with_name("prompt_supernode.py")),
        "--root-certificates",
        str(certs / "ca.pem"),
        "--auth-supernode-private-key",
        str(private_key),
        "--superlink",
        f"127.0.0.1:{superlink_port}",
        "--port",
        str(runtime_port),
        "--node-config",
        f"partition-id={partition_id} num-partitions={num_partitions}",
    ]


def register_command(public_key: Path) -> list[str]:
    """``flwr supernode register``: let the SuperNode holding ``public_key``'s private key connect."""
    return [flower_command("flwr"), "supernode", "register", str(public_key), CONNECTION]


def stage_app(project: Path, home: Path) -> Path:
    """The Flower App's files (``pyproject.toml``, the package's modules) copied to ``home/app``; its path.

    ``flwr run`` reads every file under the folder it is given before it picks the app's, and a
    project's ``.venv`` holds 65,000: 4.3 s here, against 0.1 s for the staged copy. The bundle it
    builds holds the same files either way: the package's Python modules and ``pyproject.toml``.
    """
    import shutil

    app = home / "app"
    app.mkdir()
    shutil.copy2(project / "pyproject.toml", app)
    shutil.copytree(
        project / "fedmnist",
        app / "fedmnist",
        ignore=lambda folder, names: [
            n for n in names if n == "__pycache__" or (Path(folder, n).is_file() and not n.endswith(".py"))
        ],
    )
    return app


def flwr_run_command(project: Path, run_config: Path) -> list[str]:
    return [flower_command("flwr"), "run", str(project), CONNECTION, "--run-config", str(run_config), "--stream"]


def write_flower_home(home: Path, superlink_port: int, run_config: dict[str, Any], certs: Path) -> Path:
    """``config.toml`` naming the local SuperLink (over TLS), the run config file (its path returned), and
    the lighter ``flwr-clientapp`` in ``bin/`` (``fedmnist.runtimes.light_clientapp``)."""
    import tomli_w  # A Flower dependency.

    from fedmnist.runtimes.light_clientapp import install

    install(home / "bin")

    connection = {
        "superlink": {
            "default": CONNECTION,
            CONNECTION: {"address": f"127.0.0.1:{superlink_port}", "root-certificates": str(certs / "ca.pem")},
        }
    }
    (home / "config.toml").write_text(tomli_w.dumps(connection), encoding="utf-8")
    path = home / "run_config.toml"
    path.write_text(tomli_w.dumps(run_config), encoding="utf-8")
    return path


def serverapp_pids(superlink_port: int) -> list[int]:
    """The ``flwr-serverapp`` processes of the SuperLink on ``superlink_port`` (at most one per run)."""
    address = f"127.0.0.1:{superlink_port}".encode()
    return [
        pid
        for pid, arguments in process_arguments()
        if any(a.endswith(b"flwr-serverapp") for a in arguments) and address in arguments
    ]


def helper_pids(parents: list[int]) -> list[int]:
    """Flower's ``flower-superexec`` helpers of ``parents``: detached, they outlive them by seconds otherwise."""
    return _watchers(b"flower-superexec", b"--parent-pid", parents)


def trainer_pids(helpers: list[int]) -> list[int]:
    """The warm trainers (``fedmnist.client.warm_trainer``) the ClientApps of ``helpers`` started."""
    return _watchers(b"fedmnist.client.warm_trainer", b"--watch-pid", helpers)


def _watchers(program: bytes, flag: bytes, watched: list[int]) -> list[int]:
    """Processes running ``program`` whose ``flag`` names one of ``watched``."""
    wanted = {str(pid).encode() for pid in watched}
    return [
        pid
        for pid, arguments in process_arguments()
        if any(a.endswith(program) for a in arguments)
        and any(a == flag and b in wanted for a, b in pairwise(arguments))
    ]


def clientapp_pids(runtime_ports: list[int]) -> list[int]:
    """The ``flwr-clientapp`` processes of the SuperNodes whose runtime API is on ``runtime_ports``.

    A SuperNode's helper starts one per message, in a session of its own. It watches that helper
    (``--parent-pid``), yet one in flight when the run stopped was still running 90 minutes later
    (measured, Flower 1.42): the launcher stops them itself.
    """
    addresses = {f"127.0.0.1:{port}".encode() for port in runtime_ports}
    return [
        pid
        for pid, arguments in process_arguments()
        if any(a.endswith(b"flwr-clientapp") for a in arguments) and addresses & set(arguments)
    ]


def process_arguments() -> list[tuple[int, list[bytes]]]:
    """Every process this user may read: pid and command-line arguments."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((int(entry.name), (entry / "cmdline").read_bytes().split(b"\0")))
            except OSError:  # Ended meanwhile, or not ours to read.
                continue
    return found
