"""What the gallery stores share: the fingerprint error, vector normalisation, an exact top-k scan."""
from __future__ import annotations

import numpy as np


class FingerprintMismatchError(ValueError):
    """Query model and index were made by different models."""


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as contiguous float32 (all-zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


PAD_SCORE = -np.finfo(np.float32).max  # the score FAISS gives a missing neighbour (id -1)


def exact_top_k(q: np.ndarray, vecs: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products of L2-normalised queries ``q`` against ``vecs`` (ids ``ids``).

    Returns:
        ``(scores, ids)``, both (Q, k), best first, padded with id -1 (score ``PAD_SCORE``) when
        ``len(ids) < k``: the shape and padding of a FAISS search.
    """
    k_eff = min(k, len(ids))
    scores = np.full((len(q), k), PAD_SCORE, np.float32)
    out = np.full((len(q), k), -1, np.int64)
    if k_eff == 0:
        return scores, out
    for lo in range(0, len(q), 256):  # 256 x len(ids) float32 scores at a time
        sim = q[lo:lo + 256] @ vecs.T
        top = (np.argpartition(-sim, k_eff - 1, axis=1)[:, :k_eff] if k_eff < len(ids)
               else np.broadcast_to(np.arange(len(ids)), sim.shape))
        part = np.take_along_axis(sim, top, axis=1)
        order = np.argsort(-part, axis=1, kind="stable")
        scores[lo:lo + 256, :k_eff] = np.take_along_axis(part, order, axis=1)
        out[lo:lo + 256, :k_eff] = ids[np.take_along_axis(top, order, axis=1)]
    return scores, out
