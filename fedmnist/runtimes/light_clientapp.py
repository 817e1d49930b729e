"""``flwr-clientapp`` without the SuperNode's own imports: 0.6 s less CPU for every message of the local runtime.

Flower's SuperExec starts the program named ``flwr-clientapp`` for every
message. That console script imports ``flwr.supernode.cli``, whose
``__init__`` also imports the ``flower-supernode`` command (SQLAlchemy,
Alembic, FastAPI, Uvicorn): 1.0 s of the 1.2 s its imports take here, for
modules a ClientApp process never uses. The program ``install`` writes runs
the same ``flwr_clientapp`` function with the same arguments, after putting an
empty stand-in for that package's ``__init__`` in ``sys.modules``, so that only
the ``flwr_clientapp`` module of the package loads (0.6 s here).

The local Deployment Runtime puts it first on its Flower processes' ``PATH``
(``fedmnist.runtimes.deployment.environment``); a SuperNode on another machine
runs Flower's own. ``tests/test_flower_internals.py`` pins what it assumes.
"""

from __future__ import annotations

import sys
from pathlib import Path

COMMAND = "flwr-clientapp"
PROGRAM = '''#!{python}
"""Flower's flwr-clientapp, importing only what a ClientApp process uses (fedmnist.runtimes.light_clientapp)."""
import sys
import types

import flwr.supernode

package = types.ModuleType("flwr.supernode.cli")  # Stands in for the package: its __init__ is not run.
package.__path__ = [folder + "/cli" for folder in flwr.supernode.__path__]
sys.modules["flwr.supernode.cli"] = package
from flwr.supernode.cli.flwr_clientapp import flwr_clientapp  # noqa: E402

sys.exit(flwr_clientapp())
'''


def install(folder: Path) -> Path:
    """Write the lighter ``flwr-clientapp`` into ``folder`` (for the front of ``PATH``) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / COMMAND
    program.write_text(PROGRAM.format(python=sys.executable), encoding="utf-8")
    program.chmod(0o755)
    return program
