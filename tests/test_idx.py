"""``--dataset idx:DIR``: MNIST's IDX files as Keras, torchvision and LeCun's site ship them, good and bad."""

from __future__ import annotations

import gzip
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import free_port, run_script
from fedmnist.common.errors import UserError
from fedmnist.data.sources import MnistData, load_mnist

NAMES = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "t10k-images": "t10k-images-idx3-ubyte",
    "t10k-labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file's bytes, written the way LeCun's format describes (big-endian counts)."""
    return bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_folder(folder: Path, data: MnistData, *, gz: tuple[str, ...] = (), names: dict[str, str] = NAMES) -> Path:
    """The four files of ``data`` in ``folder``; those named in ``gz`` gzipped."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images": data.x_train.reshape(-1, 28, 28),
        "train-labels": data.y_train,
        "t10k-images": data.x_test.reshape(-1, 28, 28),
        "t10k-labels": data.y_test,
    }
    for part, array in arrays.items():
        raw = idx_bytes(np.ascontiguousarray(array, dtype=np.uint8))
        if part in gz:
            (folder / f"{names[part]}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / names[part]).write_bytes(raw)
    return folder


@pytest.fixture(scope="module")
def small(mnist_5k: MnistData) -> MnistData:
    return MnistData(mnist_5k.x_train[:30], mnist_5k.y_train[:30], mnist_5k.x_test[:12], mnist_5k.y_test[:12], "")


def test_plain_and_gzipped_files_load_with_the_official_split(tmp_path: Path, small: MnistData) -> None:
    folder = write_folder(tmp_path / "raw", small, gz=("train-images", "t10k-labels"))
    data = load_mnist(f"idx:{folder}")
    assert data.source == f"idx:{folder.resolve()}"  # Absolute: every client reads the same files.
    for mine, theirs in (
        (data.x_train, small.x_train),
        (data.y_train, small.y_train),
        (data.x_test, small.x_test),
        (data.y_test, small.y_test),
    ):
        assert mine.dtype == np.uint8 and np.array_equal(mine, theirs)


def test_the_dotted_file_names_some_copies_use_are_found(tmp_path: Path, small: MnistData) -> None:
    dotted = {part: name.replace("-idx", ".idx") for part, name in NAMES.items()}  # train-images.idx3-ubyte
    folder = write_folder(tmp_path / "kaggle", small, names=dotted)
    assert len(load_mnist(f"idx:{folder}").y_train) == 30


def _spoil(folder: Path, name: str, change) -> None:
    path = folder / name
    path.write_bytes(change(path.read_bytes()))


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (
            lambda f: _spoil(f, NAMES["train-images"], lambda b: b"\x08\x03" + b[2:]),
            "train-images-idx3-ubyte: not an IDX file of unsigned bytes (magic number 08030803",
        ),
        (
            lambda f: _spoil(f, NAMES["train-labels"], lambda b: b[:2] + b"\x0d" + b[3:]),  # float32 type code
            "train-labels-idx1-ubyte: not an IDX file of unsigned bytes",
        ),
        (
            lambda f: _spoil(f, NAMES["t10k-images"], lambda b: b[:-100]),
            "t10k-images-idx3-ubyte: truncated: its header says 12 x 28 x 28 = 9,408 values, it holds 9,308",
        ),
        (
            lambda f: _spoil(f, NAMES["t10k-labels"], lambda b: b + b"\x01"),
            "t10k-labels-idx1-ubyte: longer than its header says: its header says 12 = 12 values, it holds 13",
        ),
        (
            lambda f: _spoil(f, NAMES["train-labels"], lambda b: b[:6]),
            "IDX header cut short (6 bytes for 1 dimensions)",
        ),
        (
            lambda f: (f / NAMES["train-labels"]).write_bytes(idx_bytes(np.zeros(29, np.uint8))),
            "train: 30 images but 29 labels",
        ),
        (
            lambda f: (f / NAMES["t10k-labels"]).write_bytes(idx_bytes(np.full(12, 10, np.uint8))),
            "t10k-labels: label 10 found, expected 0-9",
        ),
        (
            lambda f: (f / NAMES["t10k-images"]).write_bytes(idx_bytes(np.zeros((12, 32, 32), np.uint8))),
            "t10k-images: images of 32 x 32, expected 28 x 28",
        ),
        (lambda f: (f / NAMES["t10k-labels"]).unlink(), "t10k-labels-idx1-ubyte[.gz] is missing"),
    ],
)
def test_each_kind_of_bad_file_gets_one_line_naming_it(tmp_path: Path, small: MnistData, spoil, message: str) -> None:
    folder = write_folder(tmp_path / "raw", small)
    spoil(folder)
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        load_mnist(f"idx:{folder}")
    assert "\n" not in str(caught.value)


def test_a_truncated_gzip_and_a_missing_folder_get_one_line(tmp_path: Path, small: MnistData) -> None:
    folder = write_folder(tmp_path / "raw", small, gz=("train-labels",))
    _spoil(folder, f"{NAMES['train-labels']}.gz", lambda b: b[: len(b) // 2])
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte\.gz: not a readable gzip file"):
        load_mnist(f"idx:{folder}")
    with pytest.raises(UserError, match="no such folder"):
        load_mnist(f"idx:{tmp_path / 'nowhere'}")


@pytest.mark.slow
def test_a_run_trains_on_idx_files_and_a_bad_folder_exits_with_one_line(tmp_path: Path, mnist_5k: MnistData) -> None:
    """The whole 5k set written as IDX files: the server and its clients read them, no cache, no network."""
    folder = write_folder(tmp_path / "MNIST" / "raw", mnist_5k, gz=tuple(NAMES))  # torchvision's layout
    out = tmp_path / "out"
    done = run_script(
        "-m",
        "fedmnist.launch.launcher",
        "--rounds",
        "1",
        "--clients",
        "2",
        "--dataset",
        f"idx:{folder}",
        "--port",
        str(free_port()),
        "--no-dashboard",
        "--out",
        str(out),
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((out / "history" / "history_1.json").read_text())
    assert summary["data_source"] == f"idx:{folder}"
    record = summary["rounds"][0]
    assert (record["fit_results"], record["rejected_updates"], record["fit_failures"]) == (2, 0, 0)
    assert summary["final"]["accuracy"] > 0.5 > summary["initial"]["centralized"]["accuracy"]

    bad = run_script("server.py", "--dataset", f"idx:{tmp_path / 'nowhere'}", "--out", str(tmp_path / "bad"))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "no such folder" in bad.stderr.strip().splitlines()[-1]
