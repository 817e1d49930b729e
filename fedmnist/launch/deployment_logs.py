"""What the launcher reads in a Deployment Runtime's logs: a refused SuperNode, a stopped run's last words."""

from __future__ import annotations

from pathlib import Path

from fedmnist.common.errors import UserError
from fedmnist.launch.processes import read_lines


def say_what_was_saved(out: Path, rounds: int, logs: Path) -> None:
    """Deployment, stopped early: flwr run's log stream may end before the ServerApp's last lines; say them."""
    from fedmnist.results.paths import RunPaths
    from fedmnist.results.records import read_summary
    from fedmnist.server.saving import stopped_sentence

    paths = RunPaths(out, rounds)
    if "Stopped after round" in "\n".join(read_lines(logs / "server.log")):
        return
    try:
        done = read_summary(paths.as_partial().json).get("interrupted_after_round")
    except UserError:
        return  # Nothing saved: no round had finished.
    if done is None:
        return  # A run that was not stopped.
    print(stopped_sentence(paths, done), flush=True)


def refused_supernode(log_path: Path) -> bool:
    """Whether a SuperNode's log says the SuperLink refused it (an unregistered key)."""
    from fedmnist.runtimes.deployment import SUPERNODE_REFUSED

    return any(SUPERNODE_REFUSED in line for line in read_lines(log_path))
