"""What the index modules share: the fingerprint error and vector normalisation."""
from __future__ import annotations

import numpy as np


class FingerprintMismatchError(ValueError):
    """Query model and index were made by different models."""


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as contiguous float32 (all-zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
