"""``--dataset fashion-mnist``: OpenML's Fashion-MNIST through fetch_openml, else Debian's IDX files offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmnist.data.sources import FASHION, MnistData, OpenMLUnavailable, cache_path, load_mnist
from fedmnist.settings import defaults
from openml_cache import write_openml_cache
from test_idx import write_folder


@pytest.fixture(scope="module")
def slice_(mnist_5k: MnistData) -> MnistData:
    """A small slice standing in for clothes: 60 training rows and 10 test rows (OpenML's 6:1)."""
    return MnistData(mnist_5k.x_train[:60], mnist_5k.y_train[:60], mnist_5k.x_test[:10], mnist_5k.y_test[:10], "")


def _rows(data: MnistData) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([data.x_train, data.x_test]), np.concatenate([data.y_train, data.y_test])


def _assert_same(data: MnistData, expected: MnistData) -> None:
    assert data.source == FASHION
    for mine, theirs in (
        (data.x_train, expected.x_train),
        (data.y_train, expected.y_train),
        (data.x_test, expected.x_test),
        (data.y_test, expected.y_test),
    ):
        np.testing.assert_array_equal(mine, theirs)


def test_fashion_comes_from_openml_through_scikit_learns_cache_and_is_cached(
    tmp_path: Path, slice_: MnistData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "FASHION_IDX_FOLDER", str(tmp_path / "no-debian-package"))
    arff = write_openml_cache(tmp_path, *_rows(slice_), name="Fashion-MNIST")
    _assert_same(load_mnist(FASHION, str(tmp_path)), slice_)
    arff.unlink()  # From now on only the app's own npz cache is left.
    assert cache_path(FASHION, str(tmp_path)).exists()
    _assert_same(load_mnist(FASHION, str(tmp_path)), slice_)


def test_offline_fashion_reads_debians_idx_files_and_caches_them(
    tmp_path: Path, slice_: MnistData, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    debian = write_folder(
        tmp_path / "usr-share-datasets-fashion-mnist",
        slice_,
        gz=("train-images", "train-labels", "t10k-images", "t10k-labels"),
    )  # Debian ships them gzipped.
    monkeypatch.setattr(defaults, "FASHION_IDX_FOLDER", str(debian))
    _assert_same(load_mnist(FASHION, str(tmp_path)), slice_)
    assert "OFFLINE" in caplog.text and "dataset-fashion-mnist" in caplog.text
    assert cache_path(FASHION, str(tmp_path)).exists()


def test_offline_fashion_without_debians_package_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(defaults, "FASHION_IDX_FOLDER", str(tmp_path / "absent"))
    with pytest.raises(OpenMLUnavailable, match="apt-get install dataset-fashion-mnist") as raised:
        load_mnist(FASHION, str(tmp_path))
    assert "\n" not in str(raised.value)


@pytest.mark.slow
def test_auto_never_turns_into_fashion(tmp_path: Path, slice_: MnistData) -> None:
    write_openml_cache(tmp_path, *_rows(slice_), name="Fashion-MNIST")
    assert load_mnist("auto", str(tmp_path)).source == "mnist-5k"  # MNIST's offline fallback, not the clothes.


@pytest.mark.skipif(
    not Path(defaults.FASHION_IDX_FOLDER).is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (./test.sh installs it as root)",
)
@pytest.mark.slow
def test_debians_fashion_mnist_has_the_official_60k_10k_split(tmp_path: Path) -> None:
    data = load_mnist(FASHION, str(tmp_path))
    assert data.x_train.shape == (60_000, 784) and data.x_test.shape == (10_000, 784)
    assert np.bincount(data.y_train).tolist() == [6_000] * 10 and np.bincount(data.y_test).tolist() == [1_000] * 10
