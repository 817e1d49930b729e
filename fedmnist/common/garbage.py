"""Python's cycle collector in a process that imports TensorFlow: paused during start-up, then kept off its objects.

The collector finds reference cycles by walking objects; a full collection
walks every object the process holds. Importing TensorFlow, Keras and Flower
and building a model leaves about 350,000 of them, and start-up made the
collector walk them again and again for nothing (it freed almost none): each
client spent about 1.5 CPU-seconds of its start-up in full collections here,
with three clients and a server sharing 2 cores. After start-up, one full
collection took 0.18 s in the middle of the server's plots.

So ``server.py`` and ``client.py`` pause the collector before their first heavy
import, and a simulation worker while it warms up for a run
(``fedmnist.client.flower_client.ClientCache.warm_up``, where it imports
TensorFlow); each calls ``start_up_done`` once TensorFlow is imported and the
model is built: what exists then lives as long as the process, and ``gc.freeze``
takes it out of every later collection (CPython's documented use of ``freeze``);
the collector then runs as usual on what the rounds create.
"""

from __future__ import annotations

import gc


def pause_collection() -> None:
    """No cycle collection until ``start_up_done`` (reference counting still frees the rest at once)."""
    gc.disable()


def start_up_done() -> None:
    """After a paused start-up: leave what it built out of later collections, and collect again."""
    if gc.isenabled():  # Not paused (a process that is not server.py or client.py): nothing to undo.
        return
    gc.freeze()
    gc.enable()
