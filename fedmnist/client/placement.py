"""Where a client trains: the Ray node of a virtual client, so that a cluster's records say which machine did what."""

from __future__ import annotations

import sys


def ray_node() -> str | None:
    """The address of the Ray node this process is a worker of, or None outside Ray (classic, deployment)."""
    ray = sys.modules.get("ray")  # Only Ray's workers (and the simulation's driver) have imported Ray.
    if ray is None or not ray.is_initialized():
        return None
    return str(ray.util.get_node_ip_address())
