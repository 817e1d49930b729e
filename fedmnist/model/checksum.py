"""A short checksum of a model's weights: two people compare it to know they got the same model.

Twelve hex digits of SHA-256 over every array's dtype, shape and bytes (little-endian,
C order), so the same weights give the same checksum on every machine and a
single changed bit gives another. It names a model; it is not a security check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

CHECKSUM_DIGITS = 12


def weights_checksum(arrays: Sequence[np.ndarray]) -> str:
    """The checksum of ``arrays``, a model's weights in their order (e.g. ``get_weights()``)."""
    digest = hashlib.sha256()
    for array in arrays:
        canonical = np.ascontiguousarray(array, dtype=np.asarray(array).dtype.newbyteorder("<"))
        digest.update(f"{canonical.dtype.str}{canonical.shape};".encode())
        digest.update(canonical.tobytes())
    return digest.hexdigest()[:CHECKSUM_DIGITS]
