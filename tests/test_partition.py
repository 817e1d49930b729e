"""Partition schemes: IID, Dirichlet label skew and shards, on the real 5k labels."""

from __future__ import annotations

import numpy as np
import pytest

from fedmnist.common.errors import UserError
from fedmnist.data.partition import (
    DIRICHLET,
    IID,
    SHARDS,
    PartitionScheme,
    label_histograms,
    parse_partition,
    partition_rows,
)


def skew(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each client's label mix and the overall mix (0 = IID, 1 = disjoint)."""
    overall = np.bincount(labels, minlength=10) / len(labels)
    mixes = label_histograms(labels, parts) / np.array([[len(p)] for p in parts])
    return float(np.mean(0.5 * np.abs(mixes - overall).sum(axis=1)))


@pytest.mark.parametrize(
    ("text", "scheme"),
    [
        ("iid", PartitionScheme(IID)),
        ("dirichlet:0.1", PartitionScheme(DIRICHLET, 0.1)),
        ("Shards:2", PartitionScheme(SHARDS, 2)),
    ],
)
def test_parse_partition(text: str, scheme: PartitionScheme) -> None:
    assert parse_partition(text) == scheme
    assert parse_partition(str(scheme)) == scheme  # str() round-trips, as saved in the config.


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dirichlet:0", "alpha must be greater than 0"),
        ("dirichlet:-1", "alpha must be greater than 0"),
        ("shards:1.5", "whole number"),
        ("shards:0", "whole number"),
        ("dirichlet:abc", "expected a number"),
        ("label-skew", "unknown partition"),
        ("iid:3", "unknown partition"),
    ],
)
def test_parse_partition_rejects_bad_values(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_partition(text)


@pytest.mark.parametrize("text", ["iid", "dirichlet:0.5", "dirichlet:0.1", "shards:2"])
def test_partitions_are_disjoint_complete_and_reproducible(mnist_5k, text: str) -> None:
    labels = mnist_5k.y_train
    parts = partition_rows(labels, 5, parse_partition(text), seed=3)
    joined = np.concatenate(parts)
    assert len(joined) == len(np.unique(joined))  # Disjoint.
    if not text.startswith("shards"):  # Shards of equal size may leave a remainder unused.
        assert sorted(joined.tolist()) == list(range(len(labels)))
    again = partition_rows(labels, 5, parse_partition(text), seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_label_skew_grows_as_alpha_falls(mnist_5k) -> None:
    labels = mnist_5k.y_train
    measured = {
        text: skew(labels, partition_rows(labels, 5, parse_partition(text), seed=0))
        for text in ("iid", "dirichlet:100", "dirichlet:1", "dirichlet:0.1")
    }
    assert measured["iid"] < 0.05 and measured["dirichlet:100"] < 0.1
    assert measured["dirichlet:100"] < measured["dirichlet:1"] < measured["dirichlet:0.1"]
    assert measured["dirichlet:0.1"] > 0.5


def test_shards_give_each_client_k_labels(mnist_5k) -> None:
    # 4,000 rows, 400 per digit, sorted into 20 shards of 200: every shard holds one digit.
    labels = mnist_5k.y_train
    parts = partition_rows(labels, 10, parse_partition("shards:2"), seed=0)
    assert all(len(np.unique(labels[part])) <= 2 for part in parts)
    assert all(len(part) == 400 for part in parts)


def test_label_histograms_count_digits_per_client() -> None:
    labels = np.array([0, 0, 1, 9, 9, 9])
    assert label_histograms(labels, [np.array([0, 1, 2]), np.array([3, 4, 5])]).tolist() == [
        [2, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 3],
    ]


def test_more_clients_than_examples_is_a_user_error() -> None:
    with pytest.raises(UserError, match="cannot split 10 examples among 6 clients"):
        partition_rows(np.zeros(10, np.uint8), 6, PartitionScheme(IID), seed=0)


def test_more_shards_than_examples_is_a_user_error() -> None:
    with pytest.raises(UserError, match="more shards than 100 examples"):
        partition_rows(np.arange(100) % 10, 10, PartitionScheme(SHARDS, 20), seed=0)
