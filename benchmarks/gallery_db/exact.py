"""Exact (filtered) top-k by blockwise matrix products: the reference every recall is measured against.

One pass over the vectors answers several views at once: a view is a boolean mask over the rows
(the rows alive in a gallery, and the rows a filter keeps), so the base gallery, the gallery
after add/remove and each filter of either share the same products ``queries @ block.T``.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

BLOCK = 32768  # rows per product: 1,000 queries x 32k rows of float32 scores = 131 MB


def _top(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of ``scores`` (unsorted) and their ``ids`` (same shape as scores)."""
    if scores.shape[1] <= k:
        return scores, ids
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(scores, part, 1), np.take_along_axis(ids, part, 1)


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, views: Mapping[str, np.ndarray],
               block: int = BLOCK) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The exact top-``k`` inner-product neighbours of ``queries`` among the rows of each view.

    Args:
        vectors: (N, D) float32 (memory-mapped is fine: read ``block`` rows at a time).
        queries: (Q, D) float32.
        k: neighbours per query.
        views: name -> (N,) bool, the rows that view searches.
        block: rows per matrix product.

    Returns:
        name -> ``(scores, rows)``, (Q, k) float32 / int64, best first; rows padded with -1 (and
        scores with -inf) where a view holds fewer than ``k`` rows.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    nq, n = len(q), len(vectors)
    best = {name: (np.empty((nq, 0), np.float32), np.empty((nq, 0), np.int64)) for name in views}
    for s in range(0, n, block):
        e = min(n, s + block)
        live = {name: np.flatnonzero(m[s:e]) for name, m in views.items()}
        if not any(len(c) for c in live.values()):
            continue
        scores = q @ np.asarray(vectors[s:e], dtype=np.float32).T
        for name, cols in live.items():
            if not len(cols):
                continue
            sub = scores if len(cols) == e - s else scores[:, cols]
            ids = np.broadcast_to(cols.astype(np.int64) + s, sub.shape)
            sc, ix = _top(sub, ids, k)
            old_s, old_i = best[name]
            best[name] = _top(np.concatenate([old_s, sc], 1), np.concatenate([old_i, ix], 1), k)
    out = {}
    for name, (sc, ix) in best.items():
        order = np.argsort(-sc, axis=1, kind="stable")
        sc, ix = np.take_along_axis(sc, order, 1), np.take_along_axis(ix, order, 1)
        pad = k - sc.shape[1]
        if pad > 0:
            sc = np.concatenate([sc, np.full((nq, pad), -np.inf, np.float32)], 1)
            ix = np.concatenate([ix, np.full((nq, pad), -1, np.int64)], 1)
        out[name] = (sc.astype(np.float32), ix.astype(np.int64))
    return out


def save(path: str | Path, truth: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write the rows of each view's top-k to ``path`` (.npz) atomically."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, **{name: rows for name, (_, rows) in truth.items()})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load(path: str | Path) -> dict[str, np.ndarray]:
    """The rows of each view's top-k written by :func:`save`."""
    with np.load(path) as z:
        return {name: z[name] for name in z.files}


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean overlap of each row of ``found`` with the same row of ``exact`` (its top k; -1 never counts)."""
    k = exact.shape[1]
    hits = [len((set(a[:k].tolist()) & set(e.tolist())) - {-1}) for a, e in zip(found, exact)]
    wanted = [max(1, min(k, int(np.sum(e >= 0)))) for e in exact]
    return float(np.mean(np.asarray(hits) / np.asarray(wanted)))
