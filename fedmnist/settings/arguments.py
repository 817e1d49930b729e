"""Argument types for the flags: each checks its value and says in one line what it expected.

``argparse`` calls them with the flag's text; an ``ArgumentTypeError`` becomes the parser's one-line
error (``prog: error: argument --port: ...``).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import TypeVar

from fedmnist.settings import defaults

T = TypeVar("T")


def partition_spec(text: str) -> str:
    """A valid ``--partition`` value, normalised (``Dirichlet:0.50`` -> ``dirichlet:0.5``)."""
    from fedmnist.data.partition import parse_partition  # NumPy: not needed for --help.

    try:
        return str(parse_partition(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def dataset_spec(text: str) -> str:
    """A ``--dataset`` value: one of ``defaults.DATASETS``, or ``idx:DIR`` (a folder of MNIST's IDX files)."""
    prefix = defaults.IDX_PREFIX
    if text in defaults.DATASETS:
        return text
    if text.startswith(prefix) and text[len(prefix) :].strip():
        folder = os.path.expanduser(text[len(prefix) :])
        if not os.path.isdir(folder):  # Checked with the flags, before any earlier results are moved.
            raise argparse.ArgumentTypeError(f"{text}: no such folder")
        return text
    raise argparse.ArgumentTypeError(f"choose one of {', '.join(defaults.DATASETS)} or {prefix}DIR, got {text!r}")


def run_name(text: str) -> str:
    """A run's name: one line of at most 80 characters."""
    name = text.strip()
    if not name or len(name) > 80 or any(not character.isprintable() for character in name):
        raise argparse.ArgumentTypeError(f"expected one printable line of 1-80 characters, got {text!r}")
    return name


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    value = _parse(int, text, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0."""
    value = _parse(int, text, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number greater than 0."""
    value = _parse(float, text, "a number")
    if not 0 < value < math.inf:  # Also rejects nan.
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A number of at least 0."""
    value = _parse(float, text, "a number")
    if not value >= 0:  # Also rejects nan.
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def fraction(text: str) -> float:
    """A number in (0, 1]."""
    value = _parse(float, text, "a number")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be greater than 0 and at most 1, got {text}")
    return value


def share(text: str) -> float:
    """A number in [0, 1)."""
    value = _parse(float, text, "a number")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and less than 1, got {text}")
    return value


def probability(text: str) -> float:
    """A number strictly between 0 and 1 (a DP delta)."""
    value = _parse(float, text, "a number")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be greater than 0 and less than 1, got {text}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 1-65535."""
    value = _parse(int, text, "a port number")
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 1-65535, got {value}")
    return value


def server_address(text: str) -> str:
    """``HOST:PORT`` with a valid port (IPv6 hosts in brackets: ``[::1]:8000``)."""
    host, separator, port = text.rpartition(":")
    if not separator or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    port_number(port)
    return text


def _parse(kind: Callable[[str], T], text: str, what: str) -> T:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
