"""Whether a run's settings let the same seed give the same run again, and if not, why.

Saved with the run (the live log's header and the summary, ``reproducibility``), so
a number read later says whether it can be had again; docs/reproducibility.md
explains each limit.
"""

from __future__ import annotations

from typing import TypedDict

from fedmnist.settings.server_settings import ServerSettings

REPRODUCIBLE = (
    "the seed decides the initial model, the partitions, which partitions each round samples and each client's "
    "shuffling every round, and the server sums the updates in partition-id order (tests/test_reproducibility.py)"
)


class Reproducibility(TypedDict):
    reproducible: bool
    why: str


def reproducibility(settings: ServerSettings) -> Reproducibility:
    """Whether two runs with these settings write the same records (timings apart) and model; the reasons."""
    limits = []
    if settings.dp_noise is not None:
        limits.append("differential privacy: its noise stays random, as noise known from a public seed is no privacy")
    if settings.secagg:
        limits.append("SecAgg+: its masks are random by design")
    if settings.ws_clients:
        limits.append("WebSocket clients: they train their own way (NumPy by hand, TensorFlow.js), beyond the seed")
    if limits:
        return {"reproducible": False, "why": "; ".join(limits)}
    return {"reproducible": True, "why": REPRODUCIBLE}
