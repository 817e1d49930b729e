"""Where the project's checkout is: the folder of ``server.py``, ``client.py`` and ``pyproject.toml``.

Processes the app starts (the server, clients, ``flwr run``) are started from here, and results
go here unless ``--out`` says otherwise.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
