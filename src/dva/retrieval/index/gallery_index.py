"""A loaded gallery index: the FAISS index, the model fingerprint, and the items table.

Ids are stable int64s (format ``dva-index/3``): an item keeps its id through adds and
removals, and a removed id is never reused (the pointer's ``next_id``). How each kind keeps
them, checked against faiss 1.15:

* ``flat``: ``IndexIDMap2(IndexFlatIP)``; ``add_with_ids``, ``remove_ids`` and ``reconstruct``
  by id are native.
* ``ivfpq`` without refine: ``IndexIVFPQ`` stores the ids in its lists; ``add_with_ids`` and
  ``remove_ids`` are native; ``reconstruct`` needs a direct map (a hash table, made on first
  use) and gives the PQ approximation.
* ``ivfpq`` + refine (``IndexRefine(IndexIVFPQ, SQfp16 | Flat)``): ``IndexRefine`` supports
  neither ``add_with_ids`` nor ``remove_ids`` and asserts that the base's labels are rows of the
  refine store (< ntotal), so an outer id map cannot sit under it and one above it could not
  remove. Instead the id *is* the refine store's row: an add appends to the store (rows
  ``next_id``..) and adds to the IVF lists under those ids; a remove takes the ids out of the IVF
  lists only, so they are never candidates again, while their re-ranking copies stay in the store
  as dead rows (2 bytes/dim each for fp16) until the next full rebuild. No tombstone list, no
  search-time exclusion, nothing renumbered.

Formats 1 and 2 load as they are (ids = rows, which every kind above already satisfies except
a plain ``IndexFlatIP``; the first add or remove wraps that one in an id map).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dva.retrieval.backend import Item
from dva.retrieval.index import files
from dva.retrieval.index.common import FingerprintMismatchError, exact_top_k, normalise
from dva.retrieval.index.items import ItemTable, UnknownId
from dva.retrieval.locks import ReadWriteLock
from dva.retrieval.meta import DescribedVectors
from dva.retrieval.store.gallery import Label


def _faiss() -> Any:
    import faiss

    return faiss


# A filter keeping at most this many items of an IVF-PQ + refine index is answered by scoring
# their stored re-ranking vectors exactly (GalleryIndex._scan), not through the IVF lists.
EXACT_FILTER_MAX = 65536


class IdColumn(Sequence):
    """One items column (``path`` or ``label``) as a lazy sequence keyed by id.

    ``col[id]`` reads one row (:class:`UnknownId`, a KeyError and IndexError, for an id not in
    the gallery), iteration goes in id order, ``len`` is the item count. Nothing is cached:
    what a caller does not ask for is never read.
    """

    def __init__(self, table: ItemTable, name: str, count: int):
        self._table, self._name, self._count = table, name, count

    def __getitem__(self, i: Any) -> Any:  # type: ignore[override]
        if isinstance(i, slice):
            return list(self)[i]
        return self._table.column(self._name, int(i))

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Any]:
        return self._table.iter_column(self._name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"IdColumn({self._name!r}, {self._count} items)"


@dataclass
class GalleryIndex(DescribedVectors):
    """A loaded gallery index (implements :class:`dva.retrieval.backend.Gallery`).

    ``meta`` is the description ``index.json`` holds (kind, params, fingerprint, dim, count,
    next_id, columns, ...); ``table`` the build's items (:class:`ItemTable`, read lazily).
    Searches may run from many threads; an add or remove waits for them and they for it
    (:meth:`reading` holds the searches' side, e.g. around a search and its ``items`` lookup).
    """

    index: Any  # faiss.Index
    meta: dict
    table: ItemTable
    path: Path | None = None
    lock: ReadWriteLock = field(default_factory=ReadWriteLock, repr=False, compare=False)

    # ------------------------------------------------------------------ description
    def __len__(self) -> int:
        return int(self.meta["count"])

    @property
    def paths(self) -> IdColumn:  # type: ignore[override]
        """The gallery path per id (lazy; see :class:`IdColumn`)."""
        return IdColumn(self.table, "path", len(self))

    @property
    def labels(self) -> IdColumn:
        """The label per id (lazy; see :class:`IdColumn`)."""
        return IdColumn(self.table, "label", len(self))

    @property
    def columns(self) -> tuple[str, ...]:
        """The filterable columns: ``id``, ``path``, ``label`` and the extra ones."""
        return self.table.columns

    @property
    def next_id(self) -> int:
        """The id the next added item gets (formats 1/2: the count)."""
        return int(self.meta.get("next_id", self.meta["count"]))

    @property
    def refined(self) -> bool:
        """Whether this is an IVF-PQ index with a re-ranking store (an ``IndexRefine``)."""
        return self.meta["kind"] == "ivfpq" and self.meta["params"].get("refine", "none") != "none"

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Hold off adds and removes (of this object) for the block: searches and lookups agree."""
        with self.lock.shared():
            yield

    def check_fingerprint(self, fingerprint: str) -> None:
        """Refuse queries embedded by another model.

        Raises:
            FingerprintMismatchError: naming both fingerprints and the fix.
        """
        if str(fingerprint) != self.fingerprint:
            where = f"index {self.path}" if self.path else "the index"
            raise FingerprintMismatchError(
                f"{where} was built with model fingerprint {self.fingerprint}{self.model_words()} but the "
                f"query model has fingerprint {fingerprint}; search with the model that built the "
                "index, or re-run `dva embed` and `dva index` with this model"
            )

    def model_words(self) -> str:
        """`` (backbone lite2, with adapters, 260 px)``: the model that embedded the gallery, as its
        embeddings folder described it (empty for an index built before it was recorded)."""
        model = (self.meta.get("embeddings") or {}).get("model") or {}
        words = [f"backbone {model['backbone']}"] if model.get("backbone") else []
        if "adapters" in model:
            words.append("with adapters" if model["adapters"] else "no adapters (the frozen backbone)")
        if model.get("img_size"):
            words.append(f"{model['img_size']} px")
        return f" ({', '.join(words)})" if words else ""

    def set_nprobe(self, nprobe: int) -> None:
        """Set the IVF lists visited per query (no-op for a flat index)."""
        if self.meta["kind"] == "ivfpq":
            _faiss().extract_index_ivf(self.index).nprobe = int(nprobe)

    def set_k_factor(self, k_factor: int) -> None:
        """Set how many candidates per neighbour an IVF-PQ index re-ranks (refine only)."""
        # ParameterSpace, not downcast_index: a downcast wrapper does not own the C++ index.
        if self.refined:
            _faiss().ParameterSpace().set_index_parameter(self.index, "k_factor_rf", float(k_factor))

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int, where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` cosine neighbours of ``queries`` (Q, D) among the items ``where`` keeps.

        ``where`` (:mod:`dva.retrieval.filters` syntax) is applied inside FAISS: the ids it keeps
        become an ``IDSelectorBitmap`` in the search parameters, so the top-k is the filtered
        top-k, not a filtered top-k of everything. An IVF search visits ``nprobe / fraction``
        lists (capped at nlist) when the filter keeps a ``fraction`` of the gallery, so that a
        rare class still finds its neighbours (recall@10 >= 0.95 at 1 %: tests/retrieval/test_index_live.py);
        an IVF-PQ + refine index scores the items of a filter that keeps at most ``EXACT_FILTER_MAX``
        of them exactly instead (:meth:`_scan`).

        Returns:
            ``(scores, ids)``, both (Q, k'), k' = min(k, len(self)); best first; rows padded with
            id -1 (score -3.4e38) when fewer items match.

        Raises:
            ValueError: a query dimension other than the index's, or a bad ``where`` (naming the
                gallery's columns when it names an unknown one).
        """
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if q.shape[1] != self.dim:
            raise ValueError(f"query dimension {q.shape[1]} != index dimension {self.dim}")
        k = int(min(k, len(self)))
        if k < 1:
            return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
        with self.lock.shared():
            if where is None or not where.strip():
                return self.index.search(normalise(q), k)
            kept = self.select(where)
            if len(kept) == 0:
                return (np.full((q.shape[0], k), -np.finfo(np.float32).max, np.float32),
                        np.full((q.shape[0], k), -1, np.int64))
            if self.refined and len(kept) <= EXACT_FILTER_MAX:
                return self._scan(normalise(q), k, kept)
            params, _alive = self._filtered_params(kept)  # _alive: the bitmap FAISS reads, kept referenced
            return numpy_search(self.index, normalise(q), k, params=params)

    def _scan(self, q: np.ndarray, k: int, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` among the ids ``kept``, scored with the re-ranking store's vectors.

        Why: a filter that keeps few items leaves few of them in any IVF list, and the PQ codes
        must then pick the re-ranking candidates among far-apart vectors; on 1M x 768 vectors with
        1% kept that lost ~8% of the filtered top-10 even with every tenth list visited
        (docs/BENCHMARKS.md, "Gallery as a database"). Reading the kept rows' fp16 copies and scoring
        them all costs ``len(kept) x dim`` per query, bounded by ``EXACT_FILTER_MAX``: the
        filtered top-k is then exact (up to fp16), and no slower than the IVF path it replaces.
        """
        store = _faiss().downcast_index(self.index).refine_index
        vecs = store.reconstruct_batch(np.ascontiguousarray(kept, dtype=np.int64))
        return exact_top_k(q, vecs, kept, k)

    def select(self, where: str) -> np.ndarray:
        """The ids (ascending) of the items a ``where`` filter keeps.

        Raises:
            ValueError: a filter that does not parse, or names a column this gallery lacks.
        """
        from dva.retrieval import filters

        f = filters.parse(where)
        unknown = sorted(set(f.columns()) - set(self.columns))
        if unknown:
            raise ValueError(f"the filter {where!r} names {', '.join(unknown)}, not a column of "
                             f"{self.path or 'this gallery'}; its columns are: {', '.join(self.columns)}")
        sql, params = filters.to_sql(f, self.columns)
        return self.table.ids(sql, params)

    def _filtered_params(self, kept: np.ndarray) -> tuple[Any, tuple]:
        """FAISS search parameters restricted to the ids ``kept``, and the objects they point into."""
        faiss = _faiss()
        n = max(self.next_id, int(kept[-1]) + 1)
        bits = np.zeros(n, bool)
        bits[kept] = True
        bitmap = np.packbits(bits, bitorder="little")  # FAISS: bit (id & 7) of byte (id >> 3)
        sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap))
        if self.meta["kind"] != "ivfpq":
            return faiss.SearchParameters(sel=sel), (bitmap, sel)
        ivf = faiss.extract_index_ivf(self.index)
        fraction = len(kept) / max(len(self), 1)
        nprobe = int(min(ivf.nlist, math.ceil(ivf.nprobe / max(fraction, 1e-9))))
        ivf_params = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)
        if not self.refined:
            return ivf_params, (bitmap, sel)
        k_factor = float(faiss.downcast_index(self.index).k_factor)
        params = faiss.IndexRefineSearchParameters(k_factor=k_factor, base_index_params=ivf_params)
        return params, (bitmap, sel, ivf_params)

    # ------------------------------------------------------------------ items and vectors
    def items(self, ids: Sequence[int]) -> list[Item]:
        """The items of ``ids``, in that order (:class:`UnknownId`, a KeyError, for an absent id)."""
        extra = self.table.extra_columns
        return [Item(r[0], r[1], r[2], dict(zip(extra, r[3:]))) for r in self.table.rows(ids)]

    def ids_of_paths(self, paths: Sequence[str]) -> dict[str, int]:
        """``{path: id}`` for those of ``paths`` in the gallery (an indexed lookup)."""
        return self.table.ids_of_paths(paths)

    def has_labels(self) -> bool:
        """Whether any item has a label."""
        return bool(self.table.query("SELECT 1 FROM items WHERE label IS NOT NULL LIMIT 1"))

    def ids(self) -> np.ndarray:
        """Every id in the gallery, ascending (int64)."""
        return self.table.ids()

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored float32 vectors of ``ids`` (UnknownId for an absent one).

        Flat: exact. IVF-PQ + refine: the re-ranking copy (fp16: within 1e-3). IVF-PQ alone:
        decoded PQ codes, an approximation only (the vectors themselves are not kept); the first
        call makes the IVF's direct map (see :meth:`_direct_map`: not inside :meth:`reading`).
        """
        want = [int(i) for i in ids]
        self.table.rows(want)  # raises for an id removed (its refine row may linger) or never added
        faiss = _faiss()
        if self.meta["kind"] == "ivfpq" and not self.refined:
            self._direct_map()
        with self.lock.shared():
            store = faiss.downcast_index(self.index).refine_index if self.refined else self.index
            out = np.zeros((len(want), self.dim), np.float32)
            for j, i in enumerate(want):
                out[j] = store.reconstruct(i)
        return out

    def _direct_map(self) -> None:
        """Give an IVF index its id -> list entry map (a hash table: ids are sparse), once.

        It changes the index, so it waits for running searches (do not call it inside
        :meth:`reading`); the next commit stores it, and adds and removes keep it up to date.
        """
        faiss = _faiss()
        with self.lock.exclusive():
            ivf = faiss.extract_index_ivf(self.index)
            if ivf.direct_map.type == faiss.DirectMap.NoMap:
                ivf.set_direct_map_type(faiss.DirectMap.Hashtable)

    # ------------------------------------------------------------------ changes
    def add(self, vectors: np.ndarray, paths: Sequence[str], labels: Sequence[Label],
            extra: Sequence[Mapping[str, Any]] | None = None, *, columns: Sequence[str] | None = None,
            fingerprint: str | None = None) -> np.ndarray:
        """Add items (committed as a new build before returning); their new ids.

        See :func:`dva.retrieval.index.changes.add_items` (``columns``: the order of new extra
        columns; ``fingerprint``: the model that embedded ``vectors``, checked when given).
        """
        from dva.retrieval.index.changes import add_items

        return add_items(self, vectors, paths, labels, extra, columns=columns, fingerprint=fingerprint)

    def remove(self, ids: Sequence[int]) -> int:
        """Remove the items ``ids`` (committed before returning); how many were present."""
        from dva.retrieval.index.changes import remove_items

        return remove_items(self, ids)

    def adopt(self, other: GalleryIndex) -> None:
        """Take ``other``'s state (a newer build of the same directory) in place."""
        self.index, self.meta, self.table, self.path = other.index, other.meta, other.table, other.path

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path) -> GalleryIndex:
        """Load an index directory written by :func:`dva.retrieval.index.build.build_index`.

        Safe while the index is rebuilt or changed in place: the files ``index.json`` names
        outlive the commit that replaces them (:mod:`dva.retrieval.index.files`), and should they
        be gone all the same, the new ``index.json`` is read once more.

        Raises:
            FileNotFoundError: not an index directory, or a file of its build is missing.
            ValueError: a damaged or foreign file (the message names it and the fix).
        """
        d = Path(path)
        try:
            return cls._open(d)
        except files.BuildVanished:
            return cls._open(d)  # a newer build was committed meanwhile: index.json names it now

    @classmethod
    def _open(cls, d: Path) -> GalleryIndex:
        pointer = files.read_pointer(d)
        table = files.open_items(d, pointer)
        index = files.read_faiss(d, pointer)
        n, rows = pointer["count"], table.count()
        if not live_count(index) == rows == n or index.d != pointer["dim"]:
            raise ValueError(f"{d}: {pointer['faiss_file']} holds {live_count(index)} vectors of dimension {index.d} "
                             f"but {files.POINTER} describes {n} of dimension {pointer['dim']} with "
                             f"{rows} items; {files.REBUILD_HINT}")
        gi = cls(index, pointer, table, d)
        if pointer["kind"] == "ivfpq":
            gi.set_nprobe(pointer["params"]["nprobe"])
            gi.set_k_factor(pointer["params"].get("k_factor", 1))
        return gi


def numpy_search(index: Any, x: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``index.search(x, k, params=params)`` with FAISS's own numpy method.

    Why: ``faiss.contrib.torch_utils`` (imported by pytorch-metric-learning, among others) replaces
    every index's ``search`` with one that takes torch tensors and no ``params``; it keeps the
    original as ``search_numpy``, which is the one a filtered search needs.
    """
    return getattr(index, "search_numpy", index.search)(x, k, params=params)


def live_count(index: Any) -> int:
    """Vectors a search can return: an ``IndexRefine``'s base count (its store keeps dead rows)."""
    faiss = _faiss()
    down = faiss.downcast_index(index)
    if isinstance(down, faiss.IndexRefine):
        return int(down.base_index.ntotal)
    return int(index.ntotal)


__all__ = ["FingerprintMismatchError", "GalleryIndex", "IdColumn", "UnknownId", "live_count", "normalise"]
