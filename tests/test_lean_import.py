"""Keras without its optional imports: left out for the importing thread, there for everyone else."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from conftest import PROJECT_ROOT
from fedmnist.model.lean_import import without_optional_imports


def test_the_model_module_imports_tensorflow_and_keras_without_pandas_sklearn_or_matplotlib() -> None:
    code = (
        "import sys; import fedmnist.model.keras_model as m; "
        "print(sorted(n for n in ('pandas', 'sklearn', 'matplotlib') if n in sys.modules)); "
        "m.build_model(1, 'mlp'); import sklearn, pandas, matplotlib.pyplot; print('later: found')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split("\n")[:2] == ["[]", "later: found"], done.stderr[-2000:]


def test_only_the_importing_thread_is_refused_and_only_within_the_block() -> None:
    sys.modules.pop("tabnanny", None)  # A standard module nothing here imports: as Keras's optional ones are.
    found_elsewhere: list[str] = []

    def import_elsewhere() -> None:
        import tabnanny

        found_elsewhere.append(tabnanny.__name__)

    with without_optional_imports(["tabnanny"]):
        with pytest.raises(ModuleNotFoundError, match="left out"):
            import tabnanny
        import pydoc_data  # noqa: F401  Another name: found.

        thread = threading.Thread(target=import_elsewhere)
        thread.start()
        thread.join()
    assert found_elsewhere == ["tabnanny"]
    sys.modules.pop("tabnanny")
    import tabnanny  # After the block: found.

    assert tabnanny.__name__ == "tabnanny"
