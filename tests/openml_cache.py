"""Write the files scikit-learn's ``fetch_openml`` caches for an MNIST-like set, without a network.

scikit-learn mirrors every OpenML response it downloads as a gzipped file
under ``<data_home>/openml/openml.org/<url path>.gz`` and reads it from there
on later calls. Writing those files for a small slice of real MNIST rows lets
the real ``fetch_openml`` code path run offline, as scikit-learn's own tests do.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np

# OpenML's ids of the data sets the app fetches: name -> (data id, file id).
DATA_SETS = {"mnist_784": (554, 52667), "Fashion-MNIST": (40996, 18238735)}


def write_openml_cache(data_home: str | Path, x: np.ndarray, y: np.ndarray, name: str = "mnist_784") -> Path:
    """Cache ``x`` (n, 784 uint8) and ``y`` (n,) as OpenML's ``name`` version 1; return the ARFF path."""
    data_id, file_id = DATA_SETS[name]
    root = Path(data_home) / "openml" / "openml.org"
    arff = _arff(x, y, name).encode("utf-8")
    # scikit-learn looks names up in lower case (OpenML's are case-insensitive).
    _write(
        root,
        f"api/v1/json/data/list/data_name/{name.lower()}/limit/2/data_version/1",
        _json(
            {
                "data": {
                    "dataset": [
                        {
                            "did": data_id,
                            "name": name,
                            "version": 1,
                            "status": "active",
                            "format": "ARFF",
                            "file_id": file_id,
                        }
                    ]
                }
            }
        ),
    )
    _write(
        root,
        f"api/v1/json/data/{data_id}",
        _json(
            {
                "data_set_description": {
                    "id": str(data_id),
                    "name": name,
                    "version": "1",
                    "format": "ARFF",
                    "status": "active",
                    "description": f"A test slice of {name}.",
                    "url": f"https://api.openml.org/data/v1/download/{file_id}/{name}.arff",
                    "file_id": str(file_id),
                    "default_target_attribute": "class",
                    "md5_checksum": hashlib.md5(arff).hexdigest(),
                }
            }
        ),
    )
    features = [_feature(i, f"pixel{i + 1}", "numeric", target=False) for i in range(x.shape[1])]
    features.append(_feature(x.shape[1], "class", "nominal", target=True))
    _write(root, f"api/v1/json/data/features/{data_id}", _json({"data_features": {"feature": features}}))
    _write(
        root,
        f"api/v1/json/data/qualities/{data_id}",
        _json({"data_qualities": {"quality": [{"name": "NumberOfInstances", "value": f"{len(y)}.0"}]}}),
    )
    return _write(root, f"data/v1/download/{file_id}/{name}.arff", arff)


def _feature(index: int, name: str, kind: str, *, target: bool) -> dict[str, object]:
    feature: dict[str, object] = {
        "index": str(index),
        "name": name,
        "data_type": kind,
        "is_target": str(target).lower(),
        "is_ignore": "false",
        "is_row_identifier": "false",
        "number_of_missing_values": "0",
    }
    if target:
        feature["nominal_values"] = [str(digit) for digit in range(10)]
    return feature


def _arff(x: np.ndarray, y: np.ndarray, name: str) -> str:
    header = [f"@RELATION {name}"]
    header += [f"@ATTRIBUTE pixel{i + 1} NUMERIC" for i in range(x.shape[1])]
    header += ["@ATTRIBUTE class {0,1,2,3,4,5,6,7,8,9}", "@DATA"]
    rows = [",".join(map(str, pixels)) + f",{label}" for pixels, label in zip(x.tolist(), y.tolist())]
    return "\n".join(header + rows) + "\n"


def _json(document: dict[str, object]) -> bytes:
    return json.dumps(document).encode("utf-8")


def _write(root: Path, url_path: str, content: bytes) -> Path:
    path = root / f"{url_path}.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content))
    return path
