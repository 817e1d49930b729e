"""A plain Flower server with stock FedAvg, as in Flower's tutorials.

Used by the tests to show what client.py does against a server that is not fedmnist's:
with ``--fedmnist-config`` the stock strategy starts from fedmnist's initial model and sends
the config fedmnist's clients need (``config_for_clients``), and they train; without, it
sends no config (it asks a client for the initial weights with an empty one), and the
client refuses in one line instead of guessing the run's settings. ``--initial-model``
sends the initial model but no config, for clients that never give weights first
(the dashboard's WebSocket seats).
Usage: python tests/stock_server.py PORT ROUNDS [--fedmnist-config | --initial-model]
"""

import sys
from pathlib import Path

from flwr.common import ndarrays_to_parameters
from flwr.server import ServerConfig, start_server
from flwr.server.strategy import FedAvg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # Run as a script: the project is not installed.
from fedmnist.settings.client_config import config_for_clients  # After the path.
from fedmnist.settings.server_settings import ServerSettings

port, rounds = sys.argv[1], int(sys.argv[2])
config, initial = None, None
if "--fedmnist-config" in sys.argv or "--initial-model" in sys.argv:
    from fedmnist.model.keras_model import build_model

    settings = ServerSettings(clients=1, model="dense32")
    initial = ndarrays_to_parameters(build_model(settings.seed, settings.model).get_weights())
    if "--fedmnist-config" in sys.argv:
        config = config_for_clients(settings, "mnist-5k", run_id="stock")
strategy = FedAvg(
    min_fit_clients=1,
    min_evaluate_clients=1,
    min_available_clients=1,
    on_fit_config_fn=config,
    on_evaluate_config_fn=config,
    initial_parameters=initial,
)
history = start_server(server_address=f"127.0.0.1:{port}", config=ServerConfig(num_rounds=rounds), strategy=strategy)
print("distributed losses:", history.losses_distributed, flush=True)
