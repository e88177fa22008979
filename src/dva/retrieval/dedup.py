"""Near-duplicate images in a gallery: every pair of stored vectors with cosine >= a threshold.

:func:`find_duplicates` reads the gallery's own vectors (``Gallery.ids()`` / ``vectors()``: no
image is decoded) into one exact FAISS ``IndexFlatIP`` and runs a ``range_search`` per block of
``block`` rows against it, so memory is the vectors (N x D float32) plus one block's matches,
never an N x N matrix. The search is exact (brute force). FAISS keeps scores strictly above its
radius and in float32, so the radius sits a little below the threshold and every candidate's
cosine is recomputed in float64: the pairs are exactly those whose stored vectors have a dot
product >= the threshold. Pairs are then joined into groups by transitivity (union-find: a ~ b
and b ~ c puts a, b, c in one group even when a and c are below the threshold).

A compressed store (IVF-PQ without a re-ranking copy) keeps only PQ codes; its vectors are
reconstructions, so the scores are approximate: :attr:`Duplicates.approximate` says so.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dva.retrieval.backend import Gallery

DEFAULT_THRESHOLD = 0.95
DEFAULT_MAX_PAIRS = 5_000_000  # a threshold that low floods memory and the report: refused past it
_SLACK = 1e-4  # float32 BLAS vs float64 recomputation: the candidates' radius is this much lower
_CHUNK = 65_536  # vectors read from the store at once


@dataclass(frozen=True)
class Pair:
    """Two gallery items whose stored vectors have cosine ``score`` >= the threshold (``a`` < ``b``)."""

    a: int
    b: int
    score: float
    path_a: str = ""
    path_b: str = ""

    def to_dict(self) -> dict:
        """``{"id_a", "id_b", "score", "path_a", "path_b"}``."""
        return {"id_a": self.a, "id_b": self.b, "score": round(self.score, 6),
                "path_a": self.path_a, "path_b": self.path_b}


@dataclass
class Duplicates:
    """What :func:`find_duplicates` found.

    Attributes:
        threshold: the cosine threshold used.
        count: items compared (the whole gallery).
        pairs: every pair at or above the threshold, by score (best first), then ids.
        groups: connected components of the pairs (ids ascending; largest group first).
        approximate: the store's vectors are reconstructions (PQ codes): scores are approximate.
        note: a sentence saying so, or "".
    """

    threshold: float
    count: int
    pairs: list[Pair] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)
    approximate: bool = False
    note: str = ""

    def to_dict(self, groups: bool = True) -> dict:
        """A JSON-ready summary: threshold, counts, the note, the pairs (and groups)."""
        out: dict[str, Any] = {"threshold": self.threshold, "count": self.count, "approximate": self.approximate,
                               "note": self.note, "pairs": [p.to_dict() for p in self.pairs]}
        if groups:
            out["groups"] = self.groups
        return out


def approximate_vectors(gallery: Any) -> bool:
    """Whether the gallery's stored vectors are lossy reconstructions (IVF-PQ without refine)."""
    meta = getattr(gallery, "meta", None) or {}
    if meta.get("approximate_vectors") is not None:  # a store may declare it outright
        return bool(meta["approximate_vectors"])
    params = meta.get("params") or {}
    return meta.get("kind") == "ivfpq" and params.get("refine", "none") in (None, "none")


def range_pairs(vectors: np.ndarray, threshold: float, block: int = 4096,
                max_pairs: int = DEFAULT_MAX_PAIRS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every row pair ``(i, j)``, ``i < j``, of ``vectors`` with ``vectors[i] . vectors[j] >= threshold``.

    Args:
        vectors: (N, D) rows (L2-normalised for cosine).
        threshold: the smallest dot product kept.
        block: query rows per ``range_search`` (bounds the matches held at once).
        max_pairs: refuse (ValueError) rather than return more pairs than this.

    Returns:
        ``(i, j, score)``: int64, int64, float64 arrays sorted by score (descending), then i, j.
    """
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    found_i, found_j, found_s, total = [], [], [], 0
    for lo in range(0, len(x), block):
        q = x[lo:lo + block]
        lims, _, nbr = index.range_search(q, float(threshold) - _SLACK)
        rows = np.repeat(np.arange(lo, lo + len(q), dtype=np.int64), np.diff(lims).astype(np.int64))
        keep = nbr > rows  # each pair once, and never an item with itself
        i, j = rows[keep], nbr[keep].astype(np.int64)
        s = np.einsum("nd,nd->n", x[i].astype(np.float64), x[j].astype(np.float64))
        exact = s >= threshold
        found_i.append(i[exact])
        found_j.append(j[exact])
        found_s.append(s[exact])
        total += int(exact.sum())
        if total > max_pairs:
            raise ValueError(f"more than {max_pairs} pairs have cosine >= {threshold}: raise the threshold "
                             "(near duplicates sit at 0.9 and above)")
    i, j, s = (np.concatenate(a) if a else np.zeros(0, t)
               for a, t in ((found_i, np.int64), (found_j, np.int64), (found_s, np.float64)))
    order = np.lexsort((j, i, -s))
    return i[order], j[order], s[order]


def group_pairs(a: Sequence[int], b: Sequence[int]) -> list[list[int]]:
    """Connected components of the pairs ``(a[k], b[k])`` (union-find), each sorted; largest first."""
    parent: dict[int, int] = {}

    def find(v: int) -> int:
        root = v
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[v] != root:  # path compression: later finds are one step
            parent[v], v = root, parent[v]
        return root

    for u, v in zip(a, b):
        ru, rv = find(int(u)), find(int(v))
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    groups: dict[int, list[int]] = {}
    for v in parent:
        groups.setdefault(find(v), []).append(v)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))


def _read_vectors(gallery: Gallery, ids: np.ndarray) -> np.ndarray:
    """The stored vectors of ``ids``, :data:`_CHUNK` at a time (one array, float32)."""
    out = np.empty((len(ids), int(gallery.dim)), np.float32)
    for lo in range(0, len(ids), _CHUNK):
        out[lo:lo + _CHUNK] = gallery.vectors(ids[lo:lo + _CHUNK].tolist())
    return out


def find_duplicates(gallery: Gallery, threshold: float = DEFAULT_THRESHOLD, *, block: int = 4096,
                    max_pairs: int = DEFAULT_MAX_PAIRS) -> Duplicates:
    """Near-duplicate pairs and groups among a gallery's stored vectors (module docstring).

    Args:
        gallery: any store of :mod:`dva.retrieval.backend` (FAISS index directory, Milvus).
        threshold: cosine in (0, 1]; pairs at or above it are duplicates.
        block: query rows per range search.
        max_pairs: refuse a threshold that yields more pairs than this.

    Raises:
        ValueError: a threshold outside (0, 1], or too many pairs.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"the threshold is a cosine in (0, 1], got {threshold}; near duplicates sit at 0.9-1.0")
    ids = np.asarray(gallery.ids(), np.int64)
    approx = approximate_vectors(gallery)
    note = ("the index keeps only PQ codes (IVF-PQ without --refine): its vectors are reconstructions, so "
            "these cosines are approximate; a flat index or one built with --refine gives exact ones") if approx else ""
    out = Duplicates(float(threshold), len(ids), approximate=approx, note=note)
    if len(ids) < 2:
        return out
    x = _read_vectors(gallery, ids)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # stored normalised; PQ ones nearly
    i, j, s = range_pairs(x, threshold, block, max_pairs)
    a, b = ids[i], ids[j]
    involved = np.unique(np.concatenate([a, b])).tolist()
    paths = {it.id: it.path for lo in range(0, len(involved), _CHUNK)
             for it in gallery.items(involved[lo:lo + _CHUNK])}
    out.pairs = [Pair(int(u), int(v), float(sc), paths[int(u)], paths[int(v)]) for u, v, sc in zip(a, b, s)]
    out.groups = group_pairs(a.tolist(), b.tolist())
    return out
