"""MNIST-format IDX files on disk (``--dataset idx:DIR``): LeCun's format, as Keras, torchvision and his site ship it.

A folder holds four files, each plain or gzipped (``.gz``):
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (torchvision keeps
them in ``MNIST/raw``; some copies write ``train-images.idx3-ubyte``, which is
found too). Fashion-MNIST ships the same four files in the same format.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), each dimension as a big-endian 32-bit count, then the values;
MNIST's are unsigned bytes (type 0x08). The official split is kept: the
``train`` files are the clients', the ``t10k`` files the server's held-out set.
A file that is not such a file (its magic, its counts, its length) gives one
``UserError`` line naming it.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from fedmnist.common.errors import UserError
from fedmnist.settings import defaults

UNSIGNED_BYTE = 0x08  # The IDX type code of MNIST's pixels and labels.
_SPLITS = ("train", "t10k")  # The files' prefixes: the clients' rows, then the server's held-out set.


def load_idx_folder(folder: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` from ``folder``'s four files: flattened uint8 pixels, uint8 labels."""
    folder = Path(folder).expanduser()
    files = find_idx_files(folder)
    arrays: list[np.ndarray] = []
    for index, prefix in enumerate(_SPLITS):
        images, labels = read_idx(files[2 * index]), read_idx(files[2 * index + 1])
        arrays += _check_pair(folder, prefix, images, labels)
    x_train, y_train, x_test, y_test = arrays
    return x_train, y_train, x_test, y_test


def find_idx_files(folder: str | Path) -> list[Path]:
    """``folder``'s four files (train images, labels, then t10k's); a UserError names the first one missing.

    Cheap (nothing is read), so a run checks them before it moves earlier results aside.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"--dataset idx:{folder}: no such folder")
    return [
        _find(folder, f"{prefix}-{kind}") for prefix in _SPLITS for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
    ]


def read_idx(path: Path) -> np.ndarray:
    """The unsigned-byte array an IDX file holds, in its own dimensions; plain or gzipped."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise UserError(f"{path}: not a readable gzip file ({error})") from None
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror or error})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != UNSIGNED_BYTE:
        raise UserError(
            f"{path}: not an IDX file of unsigned bytes (magic number {raw[:4].hex() or 'missing'}, "
            f"expected 0000{UNSIGNED_BYTE:02x}0N)"
        )
    dimensions = raw[3]
    header = 4 + 4 * dimensions
    if dimensions == 0 or len(raw) < header:
        raise UserError(f"{path}: IDX header cut short ({len(raw)} bytes for {dimensions} dimensions)")
    shape = struct.unpack(f">{dimensions}I", raw[4:header])
    expected = math.prod(shape)
    if len(raw) - header != expected:
        state = "truncated" if len(raw) - header < expected else "longer than its header says"
        raise UserError(
            f"{path}: {state}: its header says {' x '.join(map(str, shape))} = {expected:,} values, "
            f"it holds {len(raw) - header:,}"
        )
    # A copy: arrays over the bytes object would be read-only, a trap for code that shuffles in place.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _find(folder: Path, name: str) -> Path:
    """``folder``'s file called ``name``, ``name.gz``, or either with ``.idx`` for ``-idx`` (a common variant)."""
    candidates = [folder / f"{stem}{suffix}" for stem in (name, name.replace("-idx", ".idx")) for suffix in ("", ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(f"--dataset idx:{folder}: {name}[.gz] is missing (MNIST's four IDX files are expected there)")


def _check_pair(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images of 28 x 28 and one label 0-9 for each; the images flattened to rows of 784."""
    side = math.isqrt(defaults.IMAGE_PIXELS)
    if images.ndim != 3 or images.shape[1:] != (side, side):
        raise UserError(
            f"{folder}/{prefix}-images: images of {' x '.join(map(str, images.shape[1:]))}, expected {side} x {side}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise UserError(f"{folder}/{prefix}: {len(images):,} images but {labels.size:,} labels")
    if labels.size and labels.max() >= defaults.NUM_CLASSES:
        raise UserError(f"{folder}/{prefix}-labels: label {labels.max()} found, expected 0-{defaults.NUM_CLASSES - 1}")
    return images.reshape(len(images), defaults.IMAGE_PIXELS), labels
