"""The ClientApp: Flower's entry point for a client on the Simulation and the Deployment Runtime.

``app`` is what ``pyproject.toml`` names as the ``clientapp``. Flower calls
``client_fn`` for every message with the node's ``partition-id`` and
``num-partitions`` (from the simulation, or from a SuperNode's
``--node-config``); the run's other settings come from the server in each
message's config. The client is ``PartitionClient``, the same as ``client.py``
runs on the classic pair (``fedmnist.client.flower_client``).

``_CACHE`` keeps what is expensive per process (the data, each share's rows,
one compiled Trainer per model): in a simulation one Ray worker plays many
clients in turn and the cache pays off. The Deployment Runtime starts a new
``flwr-clientapp`` process for every message, so there the client's methods
run in the node's warm trainer for the run instead, which keeps a cache of its
own (``fedmnist.client.warm_trainer``, docs/runtimes.md). The cache lives in
this importable module because Ray pickles functions defined in ``__main__``
by value, so a cache there would start empty for every message.

With ``--keep-optimizer``, each client's own state between messages is in
Flower's ``context.state``: Adam's step count and moments, so its training
goes on across rounds as a ``client.py`` process's does. By default every fit
starts Adam afresh, as FedAvg's clients (and Flower's examples) do.

Under client-side differential privacy (``--dp-side client``) Flower's
``fixedclipping_mod`` clips each update before it leaves (``clipping_mod``);
with ``--secagg`` Flower's ``secaggplus_mod`` masks it (``secagg_mod``).
"""

from __future__ import annotations

import os

from flwr.client import Client, ClientApp
from flwr.common import Context

from fedmnist.client.faults import fault_mod, node_fault
from fedmnist.client.flower_client import ClientCache, PartitionClient
from fedmnist.client.warm_trainer import RemotePartitionClient, runs_a_process_per_message
from fedmnist.data.sources import DATA_HOME_VARIABLE
from fedmnist.privacy.dp import clipping_mod
from fedmnist.privacy.secagg import secagg_mod

_CACHE = ClientCache(os.environ.get(DATA_HOME_VARIABLE) or None)  # One per process (see the module docstring).


def client_fn(context: Context) -> Client:
    """Flower's entry point for each message: the client of the node's partition, with the node's state."""
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    fault = node_fault(partition_id, context.node_config)  # Only when asked for (fedmnist.client.faults): tests, demos.
    if runs_a_process_per_message():
        return RemotePartitionClient(
            context.run_id, context.node_id, partition_id, num_partitions, context.state, fault
        ).to_client()
    return PartitionClient(partition_id, num_partitions, context.state, _CACHE, fault=fault).to_client()


# Flower's mods when the server asks for them: SecAgg+ (fedmnist.privacy.secagg) masks what the
# client-side DP clipping (fedmnist.privacy.dp) has clipped, so it comes first, as in Flower's fl-dp-sa example.
# Outside them, fault_mod turns an injected drop-out (fedmnist.client.faults) into the error reply of a client gone away.
app = ClientApp(client_fn=client_fn, mods=[fault_mod, secagg_mod, clipping_mod])
