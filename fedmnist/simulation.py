"""The Simulation Runtime: a run's clients as virtual Flower clients on Ray, on this machine.

``./run.sh --runtime simulation --clients 100 --fraction-fit 0.1`` runs the same
server (validation, records, checkpoints, results) as the classic runtime, but
Flower's Simulation Runtime starts no client processes: a few Ray workers
(``--sim-cpus-per-client`` sets how many fit on the machine) each play many
virtual clients in turn, one message at a time.

The clients are the ClientApp (``fedmnist.client_app``: its per-worker cache
is what makes 100-1,000 clients cheap here). The server runs in this process,
so ``server.py``'s Ctrl-C handling, checkpoints and dashboard work unchanged;
``flwr run .`` runs the same pair through the ServerApp instead (README).

The one difference from the classic runtime, by design: the run's settings
reach the clients in the fit config (the server is their only source). A
virtual client keeps its Adam state between rounds in Flower's ``context.state``.
"""

from __future__ import annotations

import os

from flwr.server import Server, ServerConfig

from fedmnist.client_app import DATA_HOME_VARIABLE
from fedmnist.client_app import app as client_app


def simulate(
    server: Server, server_config: ServerConfig, *, num_clients: int, cpus_per_client: float,
    ray_address: str | None = None, data_home: str | None = None,
) -> None:
    """Run ``server`` for its rounds with ``num_clients`` virtual clients on Ray; Ray is shut down after.

    The ServerApp runs in a thread of this process (so ``server`` records and
    checkpoints as in the classic runtime); the ClientApp runs in Ray workers.
    """
    import logging
    import warnings

    import ray
    from flwr.server import ServerApp, ServerAppComponents
    from flwr.simulation import run_simulation

    # Importing Flower's simulation turns every DeprecationWarning on ("once") for the whole
    # process, and TensorFlow's notes then reach the console; back to Python's default.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if data_home:
        os.environ[DATA_HOME_VARIABLE] = data_home  # Ray's workers inherit this process's environment.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Silences a tip about GPUs; there are none.
    components = ServerAppComponents(server=server, config=server_config)
    # Quiet: Ray's and the workers' own output would bury the round lines.
    init_args: dict[str, object] = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
    if ray_address:
        init_args["address"] = ray_address
    try:
        run_simulation(
            server_app=ServerApp(server_fn=lambda _context: components),
            client_app=client_app,
            num_supernodes=num_clients,
            backend_config={"client_resources": {"num_cpus": cpus_per_client, "num_gpus": 0.0},
                            "init_args": init_args},
        )
    finally:
        ray.shutdown()
