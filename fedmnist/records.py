"""Reading the server's per-round records (``RoundRecorder`` writes them); no Flower import.

The plots, TensorBoard and the dashboard name clients the same way.
"""

from __future__ import annotations

from typing import Any


def client_name(client: dict[str, Any]) -> str:
    """``client 2`` by partition id, or ``client 3f9a1c`` by Flower's id for clients that send none."""
    partition_id = client.get("partition_id")
    return f"client {int(partition_id)}" if partition_id is not None else f"client {str(client.get('cid', '?'))[:6]}"
