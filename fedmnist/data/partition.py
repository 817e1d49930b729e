"""How the training rows are split among clients: IID, Dirichlet label skew, or shards.

Schemes (``--partition``):

* ``iid``: a seeded shuffle cut into near-equal parts (the default).
* ``dirichlet:ALPHA``: each digit's rows are spread over clients in proportions
  drawn from Dirichlet(ALPHA); small ALPHA (0.1) gives strong label skew, large
  ALPHA approaches IID. Flower Datasets' ``DirichletPartitioner``.
* ``shards:K``: the FedAvg paper's pathological split (McMahan et al. 2017):
  rows sorted by label, cut into ``K * clients`` shards, K shards per client,
  so each client sees about K digits. Flower Datasets' ``ShardPartitioner``.

``iid`` is a shuffle and a split, the same as Flower Datasets' ``IidPartitioner``
on shuffled rows; it is done with NumPy so the default run does not pay the
2 s that importing Flower Datasets (and Hugging Face ``datasets``) costs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedmnist.common.errors import UserError
from fedmnist.settings import defaults

if TYPE_CHECKING:  # NumPy is imported where it is used: `./run.sh` checks --partition before .venv exists.
    import numpy as np

IID, DIRICHLET, SHARDS = "iid", "dirichlet", "shards"
MIN_DIRICHLET_PARTITION = 10  # Rows each client needs at least (training plus validation).


@dataclass(frozen=True)
class PartitionScheme:
    """A parsed ``--partition`` value: ``kind`` and its parameter (alpha or shards per client)."""

    kind: str
    value: float = 0.0

    def __str__(self) -> str:
        if self.kind == IID:
            return IID
        return f"{self.kind}:{self.value:g}"


def parse_partition(text: str) -> PartitionScheme:
    """``iid``, ``dirichlet:ALPHA`` (ALPHA > 0) or ``shards:K`` (whole K >= 1); else ValueError."""
    kind, _, value = text.strip().lower().partition(":")
    if kind == IID and not value:
        return PartitionScheme(IID)
    if kind == DIRICHLET:
        alpha = _number(value, text)
        if not alpha > 0:
            raise ValueError(f"dirichlet alpha must be greater than 0, got {value}")
        return PartitionScheme(DIRICHLET, alpha)
    if kind == SHARDS:
        shards = _number(value, text)
        if shards < 1 or shards != int(shards):
            raise ValueError(f"shards per client must be a whole number of at least 1, got {value}")
        return PartitionScheme(SHARDS, shards)
    raise ValueError(f"unknown partition {text!r}; use iid, dirichlet:ALPHA or shards:K")


def _number(value: str, text: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"expected a number after ':' in {text!r}") from None


def partition_rows(labels: np.ndarray, num_partitions: int, scheme: PartitionScheme, seed: int) -> list[np.ndarray]:
    """Row indices of each client's share of ``labels``: disjoint, sorted, reproducible by ``seed``.

    Raises UserError when the scheme cannot give every client at least two rows.
    """
    import numpy as np

    if num_partitions < 1:
        raise UserError(f"num-partitions must be at least 1, got {num_partitions}")
    if num_partitions * 2 > len(labels):
        raise UserError(f"cannot split {len(labels)} examples among {num_partitions} clients (2 rows each at least)")
    if scheme.kind == IID:
        order = np.random.default_rng(seed).permutation(len(labels))
        return [np.sort(part) for part in np.array_split(order, num_partitions)]
    return _flower_partitions(labels, num_partitions, scheme, seed)


def _flower_partitions(labels: np.ndarray, num_partitions: int, scheme: PartitionScheme, seed: int) -> list[np.ndarray]:
    """Cut with Flower Datasets' partitioners, on an in-memory dataset of (row, label)."""
    import numpy as np
    from datasets import Dataset
    from flwr_datasets.partitioner import DirichletPartitioner, ShardPartitioner

    if scheme.kind == DIRICHLET:
        partitioner = DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=scheme.value,
            min_partition_size=MIN_DIRICHLET_PARTITION,
            self_balancing=False,
            seed=seed,
        )
    else:
        shards = int(scheme.value)
        if shards * num_partitions > len(labels):
            raise UserError(
                f"{shards} shards for each of {num_partitions} clients is more shards than {len(labels)} examples"
            )
        partitioner = ShardPartitioner(
            num_partitions=num_partitions, partition_by="label", num_shards_per_partition=shards, seed=seed
        )
    partitioner.dataset = Dataset.from_dict({"row": np.arange(len(labels)), "label": labels.astype(np.int64)})
    try:
        with warnings.catch_warnings():
            # pyarrow deprecates an option Flower Datasets passes when sorting shards; not ours to fix.
            warnings.filterwarnings("ignore", message="Specifying null_placement", category=FutureWarning)
            parts = [
                np.sort(np.asarray(partitioner.load_partition(i)["row"], dtype=np.int64)) for i in range(num_partitions)
            ]
    except ValueError as error:  # E.g. Dirichlet could not give every client MIN rows.
        raise UserError(
            f"partition {scheme} of {len(labels)} examples among {num_partitions} clients failed: {error}"
        ) from None
    if min(len(part) for part in parts) < 2:
        raise UserError(f"partition {scheme} leaves a client with fewer than 2 of {len(labels)} examples")
    return parts


def label_histograms(labels: np.ndarray, parts: list[np.ndarray]) -> np.ndarray:
    """Examples of each digit per client: shape (clients, 10)."""
    import numpy as np

    return np.stack([np.bincount(labels[part], minlength=defaults.NUM_CLASSES) for part in parts])
