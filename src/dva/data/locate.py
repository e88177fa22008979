"""Find the project's real sample datasets (``cub100``, ``pets37``) without hard-coded paths."""
from __future__ import annotations

import os
from pathlib import Path

# The file that marks each sample dataset's folder.
MARKERS = {"cub100": "images.txt", "pets37": "pets37.csv"}


def shared_candidates(subpath: str, env: str) -> list[Path]:
    """Where a file of the project's shared folder may be: ``$ENV``, then ``../shared/<subpath>``
    beside the working directory and beside the checkout that holds this package."""
    cands = [Path(os.environ[env])] if os.environ.get(env) else []
    checkout = Path(__file__).resolve().parents[3]  # <checkout>/src/dva/data/locate.py
    return cands + [Path.cwd().parent / "shared" / subpath, checkout.parent / "shared" / subpath]


def find_dataset(name: str, explicit: str | os.PathLike | None = None, required: bool = False) -> Path | None:
    """Locate a sample dataset folder.

    Looks at ``explicit``, then ``$DVA_<NAME>`` (e.g. ``DVA_CUB100``), then
    ``../shared/data/<name>`` beside the working directory and beside the checkout that holds
    this package (an editable install).

    Args:
        name: ``cub100`` or ``pets37``.
        explicit: a folder given by the user; when set, only it is considered.
        required: raise instead of returning None when nothing is found.

    Returns:
        The folder holding the dataset's marker file, or None.
    """
    if name not in MARKERS:
        raise ValueError(f"unknown sample dataset {name!r}: expected one of {sorted(MARKERS)}")
    marker = MARKERS[name]
    env = f"DVA_{name.upper()}"
    cands = [Path(explicit)] if explicit else shared_candidates(f"data/{name}", env)
    for c in cands:
        if (c / marker).is_file():
            return c
    if required:
        where = explicit or f"${env} or ../shared/data/{name}"
        raise FileNotFoundError(f"{name} not found at {where}: point it at the folder holding {marker}")
    return None
