"""Keras (and TensorFlow, which imports it) without the optional integrations this app never uses.

When pandas, scikit-learn and matplotlib are installed (they are, for the data
loading and the plots), ``import keras`` imports them too: pandas for DataFrame
inputs, scikit-learn for its estimator wrappers, matplotlib for an image gallery.
Measured here, that is 1.4 s of the 3.7 s of CPU ``import keras`` takes, in every
process that trains or evaluates: each client, the server, each Ray worker, and
each ClientApp process of the Deployment Runtime. Keras imports each of them
inside ``try``/``except ImportError``; ``without_optional_imports`` makes that
import fail, for the importing thread only, so a module another thread imports
meanwhile (the server's data loading, say) is imported as usual, and anything
imported after the block finds the packages as they are.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

KERAS_OPTIONAL = ("pandas", "sklearn", "matplotlib")  # What Keras imports if it can, and the app's models never use.


class _LeftOut(MetaPathFinder):
    """Refuses ``names`` (and their submodules) to one thread, as if they were not installed."""

    def __init__(self, names: Sequence[str], thread: int) -> None:
        self.names, self.thread = set(names), thread

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] in self.names and threading.get_ident() == self.thread:
            raise ModuleNotFoundError(f"No module named {fullname!r} (left out of this import)", name=fullname)
        return None  # Someone else's: the next finder looks.


@contextmanager
def without_optional_imports(names: Sequence[str] = KERAS_OPTIONAL) -> Iterator[None]:
    """Within the block, this thread's imports of ``names`` fail unless they were imported before."""
    finder = _LeftOut(names, threading.get_ident())
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
