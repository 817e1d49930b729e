"""Reading the server's per-round records (``RoundRecorder`` writes them); no Flower import.

The plots, TensorBoard and the dashboard name clients the same way.
"""

from __future__ import annotations

from typing import Any


def client_name(client: dict[str, Any]) -> str:
    """``client 2`` by partition id, ``client 4 (alice)`` for a WebSocket participant, or ``client 3f9a1c``
    by Flower's id for clients that send no partition id."""
    partition_id, participant = client.get("partition_id"), client.get("participant")
    if partition_id is None:
        return f"client {str(client.get('cid', '?'))[:6]}"
    return f"client {int(partition_id)}" + (f" ({participant})" if participant else "")
