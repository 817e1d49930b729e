"""A plain Flower server with stock FedAvg and no fit config, as in Flower's tutorials.

Used by the tests to show that client.py works against any FedAvg server.
Usage: python tests/stock_server.py PORT ROUNDS
"""

import sys

from flwr.server import ServerConfig, start_server
from flwr.server.strategy import FedAvg

port, rounds = sys.argv[1], int(sys.argv[2])
strategy = FedAvg(min_fit_clients=1, min_evaluate_clients=1, min_available_clients=1)
history = start_server(server_address=f"127.0.0.1:{port}", config=ServerConfig(num_rounds=rounds), strategy=strategy)
print("distributed losses:", history.losses_distributed, flush=True)
