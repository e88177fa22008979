"""Timing searches of any gallery store (the :class:`dva.retrieval.backend.Gallery` protocol) and their recall.

A store gives ids; the reference (:mod:`benchmarks.gallery_db.exact`) gives rows of the data on
disk. :class:`IdMap` translates: a store's first build numbers the rows ``0..n-1`` (checked), and
each add returns the ids of the rows it added (saved beside the store by the phase that added them).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from benchmarks.gallery_db.exact import recall_at

T = TypeVar("T")
MIN_TIMED_S = 2.0  # a search batch shorter than this is repeated (median of `repeats`); a longer one runs once


def timed(fn: Callable[[], T], repeats: int, min_s: float = MIN_TIMED_S) -> tuple[float, T, int]:
    """Median seconds of up to ``repeats`` calls (one when the first takes >= ``min_s``), the last result, calls."""
    t0 = time.perf_counter()
    out = fn()
    times = [time.perf_counter() - t0]
    while len(times) < repeats and times[0] < min_s:
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out, len(times)


class IdMap:
    """Store ids <-> data rows: the first build's ids are its rows; added ids map to the rows they added."""

    def __init__(self, base_rows: int, added_ids: np.ndarray | None = None, added_rows: np.ndarray | None = None):
        self.base_rows = int(base_rows)
        ids = np.asarray([] if added_ids is None else added_ids, np.int64)
        rows = np.asarray([] if added_rows is None else added_rows, np.int64)
        if len(ids) != len(rows):
            raise ValueError(f"{len(ids)} added ids for {len(rows)} added rows")
        order = np.argsort(ids)
        self._ids, self._rows = ids[order], rows[order]
        if len(ids) and self._ids[0] < self.base_rows:
            raise ValueError(f"an added id ({self._ids[0]}) is below the first build's {self.base_rows} rows: "
                             "an id was reused")

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The data row of each id (-1 for -1, the padding of a short result)."""
        ids = np.asarray(ids, np.int64)
        out = np.where((ids >= 0) & (ids < self.base_rows), ids, -1)
        extra = ids >= self.base_rows
        if extra.any():
            pos = np.clip(np.searchsorted(self._ids, ids[extra]), 0, max(0, len(self._ids) - 1))
            if not len(self._ids) or not np.array_equal(self._ids[pos], ids[extra]):
                raise ValueError("the store returned an id that no build or add gave out")
            out[extra] = self._rows[pos]
        return out

    def ids(self, rows: np.ndarray) -> np.ndarray:
        """The store id of each data row (rows of the first build are their own ids)."""
        rows = np.asarray(rows, np.int64)
        out = rows.copy()
        extra = rows >= self.base_rows
        if extra.any():
            by_row = np.argsort(self._rows)
            pos = np.searchsorted(self._rows[by_row], rows[extra])
            out[extra] = self._ids[by_row][pos]
        return out

    def save(self, path: str | Path) -> None:
        """Write the added ids and rows to ``path`` (.npz)."""
        np.savez(path, base_rows=self.base_rows, ids=self._ids, rows=self._rows)

    @classmethod
    def load(cls, path: str | Path) -> IdMap:
        """Read a map written by :meth:`save`."""
        with np.load(path) as z:
            return cls(int(z["base_rows"]), z["ids"], z["rows"])


def measure_search(gallery: Any, queries: np.ndarray, exact_rows: np.ndarray, idmap: IdMap, *, k: int = 10,
                   where: str | None = None, repeats: int = 3, single: int = 0) -> dict[str, Any]:
    """Batch queries/s (all queries in one call), recall@k against ``exact_rows``, and single-query latency.

    Args:
        gallery: a store (``search(queries, k, where=...)``).
        queries: (Q, D) float32.
        exact_rows: (Q, k) the exact (filtered) top-k as data rows.
        idmap: the store's ids -> data rows.
        k: neighbours per query.
        where: the filter expression, or None.
        repeats: timed batch calls (median), fewer when one call is long (:func:`timed`).
        single: queries also sent one at a time (median latency), 0 for none.

    Returns:
        ``qps_batch``, ``recall@10`` (named for k = 10), ``queries``, ``batch_calls``, and
        ``latency_ms_single`` when ``single``.
    """
    def batch() -> tuple[np.ndarray, np.ndarray]:
        return gallery.search(queries, k, where=where) if where else gallery.search(queries, k)

    seconds, (_, ids), calls = timed(batch, repeats)
    rows = idmap.rows(ids)
    out: dict[str, Any] = {"queries": len(queries), "qps_batch": len(queries) / seconds, "batch_calls": calls,
                           f"recall@{k}": recall_at(rows, exact_rows),
                           "short_rows": int(np.sum(np.any(ids < 0, axis=1)))}
    if single:
        lat = []
        for i in range(min(single, len(queries))):
            t0 = time.perf_counter()
            gallery.search(queries[i:i + 1], k, where=where) if where else gallery.search(queries[i:i + 1], k)
            lat.append(time.perf_counter() - t0)
        out["latency_ms_single"] = 1000 * statistics.median(lat)
    return out
