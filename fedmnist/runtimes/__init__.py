"""Where a federation runs: the Ray simulation, the Deployment Runtime, the ServerApp, `flwr run`."""
