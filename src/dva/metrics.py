"""Retrieval metrics with exact, documented definitions: Recall@K, R-Precision and MAP@R.

Definitions (``q`` a query, ``R`` the number of items relevant to it: gallery items of its
class, the query itself excluded in leave-one-out mode):

* **Recall@K**: 1 if at least one of the ``K`` nearest neighbours of ``q`` has its class,
  else 0; averaged over queries. (In the FGIR literature this is "Recall@K"; it equals
  pytorch-metric-learning's ``precision_at_1`` for ``K = 1``.)
* **R-Precision**: the fraction of relevant items among the ``R`` nearest neighbours.
* **MAP@R** (Musgrave et al. 2020, "A Metric Learning Reality Check"):
  ``(1/R) * sum_{i=1..R} P(i) * rel(i)`` with ``P(i)`` the precision among the first ``i``
  neighbours and ``rel(i)`` 1 if neighbour ``i`` is relevant.

Conventions (all matching pytorch-metric-learning's ``AccuracyCalculator`` with
``avg_of_avgs=False``):

* Similarity is the cosine, in float32: embeddings are cast to float32 and L2-normalised
  here (queries explicitly, the gallery by scaling similarity columns by its inverse norms,
  which avoids a copy); an all-zero embedding has similarity 0 to everything.
* Leave-one-out (no gallery given): every embedding is a query and the gallery is the whole
  set minus the query itself, removed **by index** (an exact duplicate of the query is a
  legitimate neighbour).
* Queries with ``R = 0`` (a singleton class in leave-one-out, or a class absent from the
  gallery) are **excluded from every metric**, Recall@K included, exactly as
  pytorch-metric-learning excludes such "lone" queries from ``precision_at_1``,
  ``r_precision`` and ``mean_average_precision_at_r``. Use :func:`query_stats` to report
  how many were excluded. If no query is left a ``ValueError`` is raised.
* Ties: neighbours are ranked by decreasing similarity and, at equal similarity, by
  increasing gallery index. The top-K set is exact under this rule even when a tie
  straddles position K, so results do not depend on ``chunk_size`` or on the top-k
  implementation. (Bit-level float32 differences between matrix-multiply kernels can still
  turn near-ties around; exact duplicates do tie.)
* Per-query values are computed in float64 and averaged once at the end, so the result is
  bit-identical for every ``chunk_size``.

Memory: queries are processed in chunks; one chunk holds a ``chunk x gallery`` float32
similarity block plus ``chunk x max(K, R_max)`` neighbour lists, so beyond the inputs
(converted to float32 if they are not already; no normalised copy is made) memory is
bounded by ``memory_budget`` (256 MiB by default) whatever the number of queries. Measured
(``docs/BENCHMARKS.md``, section *Metrics speed*): +286 MB of peak RSS above the 614 MB of
inputs at 200,000 x 768 leave-one-out chunking, +266 to +294 MB at 10k-50k.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_KS = (1, 2, 4, 8)
DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes of per-chunk working memory


def _as_embeddings(x: Any, what: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (N, D) array, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{what} is empty (shape {tuple(t.shape)})")
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32,
                                                  torch.int64, torch.uint8)):
        raise ValueError(f"{what} must be numeric, got dtype {t.dtype}")
    t = t.to(torch.float32)
    # In blocks: torch.isfinite materialises |t| and three masks, ~1.7x the input at once.
    step = max(1, (1 << 22) // t.shape[1])
    for s in range(0, t.shape[0], step):
        if not bool(torch.isfinite(t[s:s + step]).all()):
            raise ValueError(f"{what} contains NaN or infinite values")
    return t


def _as_labels(y: Any, n: int, what: str) -> np.ndarray:
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"{what} has {len(arr)} entries but there are {n} embeddings")
    return arr


def _as_ks(ks: int | Iterable[int]) -> list[int]:
    out = [ks] if isinstance(ks, (int, np.integer)) else list(ks)
    if not out:
        raise ValueError("ks must not be empty")
    for k in out:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"every K must be a positive integer, got {k!r}")
    return [int(k) for k in out]


def _relevant_counts(q_labels: np.ndarray, g_labels: np.ndarray, leave_one_out: bool
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer class codes of queries and gallery, and ``R`` of every query."""
    if leave_one_out:
        _, codes = np.unique(q_labels, return_inverse=True)
        codes = codes.reshape(-1)
        q_codes = g_codes = codes
    else:
        _, codes = np.unique(np.concatenate([q_labels, g_labels]), return_inverse=True)
        codes = codes.reshape(-1)
        q_codes, g_codes = codes[: len(q_labels)], codes[len(q_labels):]
    counts = np.bincount(g_codes, minlength=int(codes.max()) + 1)
    r = counts[q_codes] - (1 if leave_one_out else 0)
    return q_codes.astype(np.int64), g_codes.astype(np.int64), r.astype(np.int64)


def query_stats(labels: Any, gallery_labels: Any = None) -> dict[str, int]:
    """How many queries :func:`retrieval_metrics` scores and how many it excludes (``R = 0``).

    Args:
        labels: Query labels (all items in leave-one-out mode).
        gallery_labels: Gallery labels, or ``None`` for leave-one-out.

    Returns:
        ``{"queries": N, "scored_queries": n, "excluded_queries": N - n}``.
    """
    q = _as_labels(labels, len(labels), "labels")
    loo = gallery_labels is None
    g = q if loo else _as_labels(gallery_labels, len(gallery_labels), "gallery_labels")
    _, _, r = _relevant_counts(q, g, loo)
    n = int((r > 0).sum())
    return {"queries": len(q), "scored_queries": n, "excluded_queries": len(q) - n}


def topk_ordered(sim: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` of each row, ordered by (value descending, column index ascending).

    ``torch.topk`` returns *some* k largest values when several are equal at the k-th
    position, and in no guaranteed order among equals. This fixes both: rows where the k-th
    value is tied beyond position k take the tied columns of lowest index, and every row is
    re-sorted with the index as tie-breaker.

    Args:
        sim: ``(B, N)`` scores (no NaN).
        k: ``1 <= k <= N``.

    Returns:
        ``(values, indices)``, both ``(B, k)``.
    """
    # One extra neighbour tells whether the k-th value is tied beyond position k (the
    # (k+1)-th value equals it), without a pass over the whole row.
    kq = min(k + 1, sim.shape[1])
    vals, idx = torch.topk(sim, kq, dim=1, largest=True, sorted=True)
    if kq > k:
        ambiguous = (vals[:, k] == vals[:, k - 1]).nonzero().flatten()
        vals, idx = vals[:, :k].contiguous(), idx[:, :k].contiguous()
    else:
        ambiguous = idx.new_zeros(0)
    thr = vals[:, -1:]
    if ambiguous.numel():
        # Bounded extra memory: a few rows at a time (an int32 cumsum over the row each).
        step = max(1, (1 << 24) // max(1, sim.shape[1]))
        for s in range(0, ambiguous.numel(), step):
            rows = ambiguous[s:s + step]
            sub, t = sim[rows], thr[rows]
            gt, eq = sub > t, sub == t
            need = k - gt.sum(dim=1, keepdim=True)
            take = gt | (eq & (eq.cumsum(dim=1, dtype=torch.int32) <= need))
            cols = take.nonzero()[:, 1].view(len(rows), k)  # row-major: ascending columns
            idx[rows] = cols
            vals[rows] = sub.gather(1, cols)
    idx, order = idx.sort(dim=1)
    vals = vals.gather(1, order)
    vals, order = vals.sort(dim=1, descending=True, stable=True)
    return vals, idx.gather(1, order)


def _auto_chunk(n_gallery: int, kk: int, budget: int) -> int:
    # sim (4 B) per gallery column, plus top-k scratch; neighbour lists: values (4), indices
    # (8, twice while sorting), labels (8), masks and cumsums (~13) per column of kk.
    per_row = 5 * n_gallery + 41 * kk
    return max(1, budget // per_row)


@torch.no_grad()
def retrieval_metrics(
    embeddings: Any,
    labels: Any,
    ks: int | Sequence[int] = DEFAULT_KS,
    *,
    gallery_embeddings: Any = None,
    gallery_labels: Any = None,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> dict[str, float]:
    """Recall@K, MAP@R and R-Precision of cosine nearest-neighbour retrieval.

    Args:
        embeddings: ``(N, D)`` query embeddings (numpy array or torch tensor; computed on the
            tensor's device).
        labels: ``(N,)`` class labels (any numpy-comparable values).
        ks: The K of Recall@K.
        gallery_embeddings: ``(M, D)`` gallery; ``None`` = leave-one-out over ``embeddings``.
        gallery_labels: ``(M,)`` gallery labels (required with ``gallery_embeddings``).
        chunk_size: Queries per chunk; ``None`` picks it from ``memory_budget``.
        memory_budget: Bytes of working memory per chunk when ``chunk_size`` is ``None``.

    Returns:
        ``{"recall@K": ..., for each K, "map@r": ..., "r_precision": ...}``, all in [0, 1].

    Raises:
        ValueError: Bad shapes, non-finite values, a K larger than the gallery, or no query
            with a relevant item.
    """
    k_list = _as_ks(ks)
    p = _problem(embeddings, labels, gallery_embeddings, gallery_labels, k_list)
    scored = np.flatnonzero(p.r_all > 0)
    if scored.size == 0:
        raise ValueError("no query has a relevant item (every query's class is a singleton or "
                         "absent from the gallery); the metrics are undefined")
    kk_max = min(p.n_ref, max(max(k_list), int(p.r_all[scored].max())))
    step = chunk_size if chunk_size is not None else _auto_chunk(p.g.shape[0], kk_max, memory_budget)
    if step < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    # Per-query values, averaged once at the end: the result is then bit-identical
    # whatever the chunking.
    acc = _PerQuery({k: np.zeros(scored.size, dtype=bool) for k in k_list},
                    np.zeros(scored.size, dtype=np.float64), np.zeros(scored.size, dtype=np.float64))
    for s in range(0, scored.size, step):
        _score_chunk(p, scored[s:s + step], s, k_list, acc)
    out = {f"recall@{k}": float(acc.hits[k].mean()) for k in k_list}
    out["map@r"] = float(acc.ap.mean())
    out["r_precision"] = float(acc.rprec.mean())
    return out


@dataclass
class _Problem:
    """Checked inputs of one :func:`retrieval_metrics` call, and what every chunk shares."""

    q: torch.Tensor  # (N, D) float32 queries
    g: torch.Tensor  # (M, D) float32 gallery (``q`` itself in leave-one-out)
    loo: bool
    n_ref: int  # neighbours available to each query
    q_codes: np.ndarray  # integer class of each query
    r_all: np.ndarray  # R of each query
    g_codes_t: torch.Tensor  # integer class of each gallery item, on the device
    inv_gnorm: torch.Tensor  # 1 / max(|g|, eps) per gallery item


@dataclass
class _PerQuery:
    """Per scored query: hit within the first K (per K), R-Precision, average precision at R."""

    hits: dict[int, np.ndarray]
    rprec: np.ndarray
    ap: np.ndarray


def _problem(embeddings: Any, labels: Any, gallery_embeddings: Any, gallery_labels: Any,
             k_list: list[int]) -> _Problem:
    """Validate the inputs (shapes, values, K against the gallery) and derive the shared tensors."""
    q = _as_embeddings(embeddings, "embeddings")
    q_lab = _as_labels(labels, q.shape[0], "labels")
    loo = gallery_embeddings is None
    if loo != (gallery_labels is None):
        raise ValueError("give both gallery_embeddings and gallery_labels, or neither")
    if loo:
        g, g_lab = q, q_lab
    else:
        g = _as_embeddings(gallery_embeddings, "gallery_embeddings").to(q.device)
        g_lab = _as_labels(gallery_labels, g.shape[0], "gallery_labels")
        if g.shape[1] != q.shape[1]:
            raise ValueError(f"embeddings have dimension {q.shape[1]} but gallery_embeddings "
                             f"{g.shape[1]}")
    n_ref = g.shape[0] - (1 if loo else 0)  # neighbours available to each query
    if max(k_list) > n_ref:
        raise ValueError(f"K={max(k_list)} exceeds the {n_ref} neighbours available to each "
                         "query")
    q_codes, g_codes, r_all = _relevant_counts(q_lab, g_lab, loo)
    # Cosine without a normalised copy of the gallery (that copy would be the largest
    # allocation at 200k x 768): query chunks are normalised when taken, and each similarity
    # column is scaled by 1 / max(|g|, eps), which is what F.normalize divides by.
    inv_gnorm = 1.0 / torch.linalg.vector_norm(g, dim=1).clamp_min(1e-12)
    return _Problem(q, g, loo, n_ref, q_codes, r_all, torch.as_tensor(g_codes, device=q.device), inv_gnorm)


def _score_chunk(p: _Problem, rows_np: np.ndarray, start: int, k_list: list[int], acc: _PerQuery) -> None:
    """Rank the gallery for the queries ``rows_np`` and write their values from ``start`` on in ``acc``."""
    dev = p.q.device
    sl = slice(start, start + len(rows_np))
    rows = torch.as_tensor(rows_np, device=dev)
    r = torch.as_tensor(p.r_all[rows_np], device=dev)
    sim = F.normalize(p.q[rows], dim=1) @ p.g.T
    sim *= p.inv_gnorm
    if p.loo:
        sim[torch.arange(len(rows), device=dev), rows] = float("-inf")
    kk = min(p.n_ref, max(max(k_list), int(r.max())))
    _vals, nn = topk_ordered(sim, kk)
    del sim
    rel = p.g_codes_t[nn] == torch.as_tensor(p.q_codes[rows_np], device=dev)[:, None]
    for k in k_list:
        acc.hits[k][sl] = rel[:, :k].any(dim=1).cpu().numpy()
    pos = torch.arange(1, kk + 1, device=dev)
    rel_r = rel & (pos[None, :] <= r[:, None])
    r64 = r.to(torch.float64)
    acc.rprec[sl] = (rel_r.sum(dim=1).to(torch.float64) / r64).cpu().numpy()
    prec = rel_r.cumsum(dim=1).to(torch.float64) / pos.to(torch.float64)
    acc.ap[sl] = ((prec * rel_r).sum(dim=1) / r64).cpu().numpy()
