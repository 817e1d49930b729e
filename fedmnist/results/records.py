"""Reading the server's per-round records (``RoundRecorder`` writes them); no Flower import.

The plots, TensorBoard and the dashboard name clients the same way.
"""

from __future__ import annotations

from typing import Any


def client_name(client: dict[str, Any]) -> str:
    """``client 2`` by partition id, ``client 4 (web: alice)`` for a WebSocket participant, or ``client 3f9a1c``
    by Flower's id for clients that send no partition id."""
    partition_id, participant = client.get("partition_id"), client.get("participant")
    if partition_id is None:
        return f"client {str(client.get('cid', '?'))[:6]}"
    return f"client {int(partition_id)}" + (f" (web: {participant})" if participant else "")


def client_order(client: dict[str, Any]) -> tuple[int, str]:
    """Clients by partition id (client 2 before client 10), then Flower's id: the order of every legend."""
    return (int(client.get("partition_id", 1 << 30)), str(client.get("cid", "")))
