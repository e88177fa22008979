"""Shared fixtures: offline settings, small models, the cub100 location."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]


def cub100_root() -> Path | None:
    """The cub100 folder (``$DVA_CUB100`` or ``../shared/data/cub100``); None when absent."""
    from dva.data.locate import find_dataset

    return find_dataset("cub100")


@pytest.fixture(scope="session")
def cub100() -> Path:
    root = cub100_root()
    if root is None:
        pytest.skip("cub100 not found (set DVA_CUB100 or place it at ../shared/data/cub100)")
    return root


@pytest.fixture(scope="session")
def pets37() -> Path:
    from dva.data.locate import find_dataset

    root = find_dataset("pets37")
    if root is None:
        pytest.skip("pets37 not found (set DVA_PETS37 or place it at ../shared/data/pets37)")
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    from dva.data import make_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(str(root), num_classes=16, per_class=8, size=64, seed=0)
    return root
