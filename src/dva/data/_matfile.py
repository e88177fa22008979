"""Reading the MATLAB ``.mat`` annotation files of Stanford Cars and Stanford Dogs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def load_mat(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """Load ``path`` with scipy and require ``keys``; errors name the file."""
    import scipy.io  # local: scipy is only needed for these two datasets

    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises several types for corrupt files
        raise ValueError(f"{path}: cannot read this MATLAB file ({type(exc).__name__}: {exc}); "
                         "re-download it") from exc
    missing = [k for k in keys if k not in mat]
    if missing:
        have = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path}: variable(s) {', '.join(missing)} not found (file has: "
                         f"{', '.join(have)}); is this the right annotation file?")
    return mat


def struct_rows(value: Any, path: Path, key: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """Turn a MATLAB struct array into a list of ``{field: python value}`` dicts."""
    rows = []
    for i, item in enumerate(np.atleast_1d(value)):
        names = getattr(item, "_fieldnames", None)
        if names is None:
            raise ValueError(f"{path}: {key} is not a struct array")
        missing = [f for f in fields if f not in names]
        if missing:
            raise ValueError(f"{path}: {key}({i + 1}) lacks field(s) {', '.join(missing)} "
                             f"(has {', '.join(names)})")
        rows.append({f: scalar(getattr(item, f)) for f in names})
    return rows


def scalar(value: Any) -> Any:
    """A MATLAB 1x1 value (possibly still wrapped in an array) as a Python scalar or str."""
    arr = np.asarray(value)
    if arr.size == 1:
        v = arr.reshape(()).item()
        return v.strip() if isinstance(v, str) else v
    if arr.size == 0:
        return None
    return value


def string_list(value: Any, path: Path, key: str) -> list[str]:
    """A MATLAB cell array (or char matrix) of strings as a list of ``str``."""
    out = []
    for i, item in enumerate(np.atleast_1d(np.asarray(value, dtype=object))):
        v = scalar(item)
        if not isinstance(v, str):
            raise ValueError(f"{path}: {key}({i + 1}) is not a string: {v!r}")
        out.append(v)
    return out


def int_list(value: Any, path: Path, key: str) -> list[int]:
    """A MATLAB numeric vector as a list of ``int`` (values must be whole numbers)."""
    arr = np.atleast_1d(np.asarray(value)).reshape(-1)
    try:
        f = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {key} must be numeric") from None
    if not np.all(np.isfinite(f)) or not np.all(f == np.round(f)):
        raise ValueError(f"{path}: {key} must hold whole numbers")
    return [int(x) for x in f]
