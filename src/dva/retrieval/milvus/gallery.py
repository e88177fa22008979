"""A gallery in a Milvus collection: :class:`MilvusGallery`, the :class:`~dva.retrieval.backend.Gallery`
protocol on ``pymilvus.MilvusClient`` (layout: :mod:`dva.retrieval.milvus.connect`)."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dva.retrieval import filters
from dva.retrieval.backend import BASE_COLUMNS, Item
from dva.retrieval.index import FingerprintMismatchError, UnknownId
from dva.retrieval.index.common import exact_top_k, normalise
from dva.retrieval.meta import DescribedVectors
from dva.retrieval.milvus import connect as mc
from dva.retrieval.store.gallery import Label

_BATCH = 1000  # ids per get/query request (an expression of a thousand ids stays small)
_PAD_SCORE = -np.finfo(np.float32).max  # what FAISS gives a missing neighbour
# A filter keeping at most this many items is answered by an exact scan of their vectors (_scan).
EXACT_FILTER_MAX = 20_000
MAX_FILTER_EF = 4096  # the widest HNSW beam a filtered search asks for
COUNT_TTL_S = 2.0  # how long a count is trusted (see MilvusGallery._counts)


def _chunks(seq: Sequence, size: int = _BATCH) -> Iterator[Sequence]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def field_values(col: str, value: Any, where: str) -> tuple[str | None, int | None]:
    """``value`` split into the ``(s_<col>, n_<col>)`` pair; None in both for a null.

    Raises:
        ValueError: a value that is neither a string, an int64 nor None, or a string too long.
    """
    if value is None:
        return None, None
    if isinstance(value, str):
        if len(value.encode()) > mc.MAX_VARCHAR:
            raise ValueError(f"{where}: {col} is {len(value.encode())} bytes long; Milvus keeps at most "
                             f"{mc.MAX_VARCHAR}")
        return value, None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return None, int(value)
    raise ValueError(f"{where}: {col} = {value!r}; a gallery value is a string, a 64-bit integer or null")


def _value(row: Mapping, col: str) -> Any:
    s, n = filters.milvus_fields(col)
    return row.get(s) if row.get(s) is not None else row.get(n)


def filtered_ef(ef: int, n: int, kept: int) -> int:
    """The HNSW beam of a search whose filter keeps ``kept`` of ``n`` items.

    HNSW walks past the excluded nodes: the beam widens as the filter narrows (``ef * n / kept``,
    at most ``MAX_FILTER_EF``), as an IVF search visits more lists (nprobe / fraction).
    """
    return int(min(MAX_FILTER_EF, max(ef, ef * n / max(kept, 1))))


@dataclass
class MilvusGallery(DescribedVectors):
    """A gallery held in one Milvus collection (Milvus Lite file or server); see the package docstring.

    ``meta`` is the description kept in the collection's properties (fingerprint, dim,
    columns, source...), with ``uri`` and ``count`` as of this object.
    """

    client: Any  # pymilvus.MilvusClient
    collection: str
    meta: dict
    uri: str
    ef: int = mc.DEFAULT_EF
    # expr -> (time, count): Milvus counts a filter by reading it (9.5 s for half of 200k rows),
    # so counts are kept COUNT_TTL_S seconds (another writer's rows show up after that) and
    # dropped by this object's own writes.
    _counts: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def open(cls, uri: str, *, token: str | None = None, fingerprint: str | None = None) -> MilvusGallery:
        """Open the gallery of model ``fingerprint`` at ``uri`` (the only dva gallery there when None).

        Raises:
            ValueError: no dva gallery there, several and no fingerprint, or a foreign collection.
            ConnectionError: see :func:`dva.retrieval.milvus.connect.connect`.
        """
        client = mc.connect(uri, token)
        names = sorted(n for n in client.list_collections() if n.startswith(mc.PREFIX))
        hint = "build one with `dva index --store milvus --uri URI --embeddings EMB_DIR`"
        if fingerprint is not None:
            name = mc.collection_name(fingerprint)
            if name not in names:
                raise ValueError(f"{uri}: no gallery of model {fingerprint} (collection {name}; the database has "
                                 f"{', '.join(names) or 'none'}); {hint}")
        elif len(names) != 1:
            raise ValueError(f"{uri}: holds no dva gallery; {hint}" if not names else
                             f"{uri}: holds the galleries of several models ({', '.join(names)}); name the model "
                             "(its fingerprint) to choose one")
        else:
            name = names[0]
        raw = (client.describe_collection(name).get("properties") or {}).get(mc.META_KEY)
        if raw is None:
            raise ValueError(f"{uri}: collection {name} was not made by dva (no {mc.META_KEY} property); "
                             "rebuild it with `dva index --store milvus --overwrite`")
        client.load_collection(name)  # a reopened collection must be loaded to answer queries
        g = cls(client, name, {**json.loads(raw), "uri": str(uri)}, str(uri))
        g.meta["count"] = len(g)
        return g

    @property
    def extra_columns(self) -> tuple[str, ...]:
        """The extra metadata columns (list CSV order)."""
        return tuple(self.meta.get("columns", ()))

    @property
    def columns(self) -> tuple[str, ...]:
        """The filterable columns: ``id``, ``path``, ``label`` and the extra ones."""
        return (*BASE_COLUMNS, *self.extra_columns)

    def __len__(self) -> int:
        return self._count("")

    def check_fingerprint(self, fingerprint: str) -> None:
        """Refuse queries embedded by another model.

        Raises:
            FingerprintMismatchError: naming both fingerprints and the fix.
        """
        if str(fingerprint) != self.fingerprint:
            raise FingerprintMismatchError(
                f"Milvus gallery {self.uri} (collection {self.collection}) was built with model fingerprint "
                f"{self.fingerprint} but the query model has fingerprint {fingerprint}; search with the "
                "model that built it, or re-run `dva embed` and `dva index --store milvus` with this model")

    def search(self, queries: np.ndarray, k: int, where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` cosine neighbours among the items ``where`` keeps (Milvus filters inside the search).

        Returns:
            ``(scores, ids)``, (Q, k'), k' = min(k, len(self)); best first; rows padded with id -1
            (score -3.4e38) when fewer items match.

        Raises:
            FilterError: a malformed ``where`` or one naming an unknown column.
            ValueError: another dimension, or k' beyond Milvus's limit.
        """
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if q.shape[1] != self.dim:
            raise ValueError(f"query dimension {q.shape[1]} != gallery dimension {self.dim}")
        expr = filters.to_milvus(filters.parse(where), self.columns) if where else ""
        k = int(min(k, len(self)))
        scores = np.full((len(q), max(k, 0)), _PAD_SCORE, np.float32)
        ids = np.full((len(q), max(k, 0)), -1, np.int64)
        if k < 1 or len(q) == 0:
            return scores, ids
        if k > mc.MAX_TOPK:
            raise ValueError(f"k = {k}: Milvus returns at most {mc.MAX_TOPK} neighbours per query")
        ef = self.ef
        if expr:
            kept = self._count(expr)
            if kept <= EXACT_FILTER_MAX:
                return self._scan(normalise(q), k, expr)
            ef = filtered_ef(self.ef, len(self), kept)
        params = {"metric_type": "IP", "params": {"ef": max(ef, k)}}  # HNSW needs ef >= k
        hits = self.client.search(self.collection, data=list(normalise(q)), limit=k, filter=expr,
                                  search_params=params, output_fields=["id"])
        for r, row in enumerate(hits):
            for j, h in enumerate(row):
                ids[r, j], scores[r, j] = h["id"], h["distance"]
        return scores, ids

    def _count(self, expr: str) -> int:
        """How many items the Milvus expression ``expr`` keeps ("" = all), at most ``COUNT_TTL_S`` old."""
        now = time.monotonic()
        hit = self._counts.get(expr)
        if hit is None or now - hit[0] > COUNT_TTL_S:
            rows = self.client.query(self.collection, filter=expr, output_fields=["count(*)"])
            hit = self._counts[expr] = (now, int(rows[0]["count(*)"]))
        return hit[1]

    def _scan(self, q: np.ndarray, k: int, expr: str) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` among the few items ``expr`` keeps, scored here from their stored vectors.

        Why: an HNSW graph searched under a filter that keeps 1% of the gallery walks mostly
        through excluded nodes and loses neighbours (recall@10 0.93 on 200k x 768 vectors at
        ef 512: docs/BENCHMARKS.md, "Gallery as a database"); reading the kept rows and scoring them
        all is exact and, at most ``EXACT_FILTER_MAX`` rows, cheap.
        """
        it = self.client.query_iterator(self.collection, batch_size=10_000, filter=expr, output_fields=["id", "vector"])
        ids: list[int] = []
        vecs: list[list[float]] = []
        try:
            while batch := it.next():
                ids += [int(r["id"]) for r in batch]
                vecs += [r["vector"] for r in batch]
        finally:
            it.close()
        return exact_top_k(q, np.asarray(vecs, np.float32).reshape(-1, self.dim), np.asarray(ids, np.int64), k)

    def _get(self, ids: Sequence[int], fields: list[str]) -> dict[int, dict]:
        """The rows of ``ids`` by id (UnknownId for an id not there)."""
        want = [int(i) for i in ids]
        got: dict[int, dict] = {}
        for part in _chunks(sorted(set(want))):
            for row in self.client.get(self.collection, ids=list(part), output_fields=fields):
                got[int(row["id"])] = row
        missing = [i for i in want if i not in got]
        if missing:
            raise UnknownId(f"id {missing[0]} is not in the Milvus gallery {self.uri} ({self.collection})"
                            + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else ""))
        return got

    def items(self, ids: Sequence[int]) -> list[Item]:
        """The items of ``ids``, in that order (UnknownId, a KeyError, for an id not in the gallery)."""
        cols = mc.data_columns(self.extra_columns)
        fields = ["id", *(f for c in cols for f in filters.milvus_fields(c))]
        rows = self._get(ids, fields)
        return [Item(int(i), _value(rows[int(i)], "path"), _value(rows[int(i)], "label"),
                     {c: _value(rows[int(i)], c) for c in self.extra_columns}) for i in ids]

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored float32 vectors of ``ids`` (in that order)."""
        rows = self._get(ids, ["id", "vector"])
        out = np.zeros((len(ids), self.dim), np.float32)
        for j, i in enumerate(ids):
            out[j] = np.asarray(rows[int(i)]["vector"], dtype=np.float32)
        return out

    def ids(self) -> np.ndarray:
        """Every id in the gallery, ascending (int64)."""
        it = self.client.query_iterator(self.collection, batch_size=10_000, filter="", output_fields=["id"])
        out: list[int] = []
        try:
            while batch := it.next():
                out += [int(r["id"]) for r in batch]
        finally:
            it.close()
        return np.sort(np.asarray(out, dtype=np.int64))

    def add(self, vectors: np.ndarray, paths: Sequence[str], labels: Sequence[Label],
            extra: Sequence[Mapping[str, str | None]] | None = None) -> np.ndarray:
        """Add ``vectors`` (L2-normalised here again) with their items, flushed before returning.

        All or nothing as far as checks go: a path already in the gallery, a column the gallery
        lacks (Milvus Lite cannot add fields to a collection) or a bad value is refused before
        anything is written.

        Returns:
            The new ids (int64, consecutive, never handed out before).
        """
        x = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        n = len(x)
        if x.shape[1] != self.dim or not len(paths) == len(labels) == n or (extra is not None and len(extra) != n):
            rows = f", {len(extra)} extra rows" if extra is not None else ""
            raise ValueError(f"add: {n} vectors of dimension {x.shape[1]} (the gallery's: {self.dim}), "
                             f"{len(paths)} paths, {len(labels)} labels{rows}; give one of each per vector")
        if n == 0:
            return np.zeros(0, np.int64)
        extra = extra if extra is not None else [{}] * n
        self._check_new(paths, extra)
        rows = [self._row(0, v, p, lab, e) for v, p, lab, e in zip(normalise(x), paths, labels, extra)]
        first = self._reserve(n)
        for j, row in enumerate(rows):
            row["id"] = first + j
        for part in _chunks(rows):
            self.client.insert(self.collection, list(part))
        self.client.flush(self.collection)  # unflushed rows are searched far slower
        self._save_count()
        return np.arange(first, first + n, dtype=np.int64)

    def _check_new(self, paths: Sequence[str], extra: Sequence[Mapping]) -> None:
        unknown = sorted({c for e in extra for c in e} - set(self.extra_columns))
        if unknown:
            raise ValueError(f"add: columns {unknown} are not in the Milvus gallery {self.uri} (it has "
                             f"{list(self.extra_columns) or 'none'}); a collection's columns are fixed when it is "
                             "built: rebuild it from embeddings whose list names them")
        seen: set[str] = set()
        twice = [p for p in map(str, paths) if p in seen or seen.add(p)]  # type: ignore[func-returns-value]
        if twice:
            raise ValueError(f"add: {', '.join(twice[:3])} given more than once; give each image once")
        s_path = filters.milvus_fields("path")[0]
        for part in _chunks([str(p) for p in paths]):
            expr = f"{s_path} in [{', '.join(filters.milvus_literal(p) for p in part)}]"
            hit = self.client.query(self.collection, filter=expr, output_fields=["id", s_path], limit=len(part))
            if hit:
                shown = ", ".join(f"{h[s_path]} (id {h['id']})" for h in hit[:3])
                raise ValueError(f"Milvus gallery {self.uri} already holds {len(hit)} of these images: {shown}; "
                                 "leave them out, or remove them first")

    def _row(self, id_: int, vector: np.ndarray, path: str, label: Label, extra: Mapping) -> dict:
        row: dict[str, Any] = {"id": id_, "vector": vector}
        values = {"path": str(path), "label": label, **{c: extra.get(c) for c in self.extra_columns}}
        for col, value in values.items():
            s, n = filters.milvus_fields(col)
            row[s], row[n] = field_values(col, value, f"add: {path}")
        return row

    def _reserve(self, n: int) -> int:
        """Raise ``next_id`` by ``n`` before the rows are written; the first of the ids reserved."""
        props = self.client.describe_collection(self.collection).get("properties") or {}
        first = int(props.get(mc.NEXT_ID_KEY, 0))
        self.client.alter_collection_properties(self.collection, {mc.NEXT_ID_KEY: str(first + n)})
        return first

    def _save_count(self) -> None:
        self._counts.clear()  # this object's write changed them
        self.meta["count"] = len(self)
        stored = {k: v for k, v in self.meta.items() if k != "uri"}
        self.client.alter_collection_properties(self.collection, {mc.META_KEY: json.dumps(stored)})

    def remove(self, ids: Sequence[int]) -> int:
        """Remove the items ``ids`` (ids not there are ignored); how many were present. Ids are never reused."""
        want = sorted({int(i) for i in ids})
        present: list[int] = []
        for part in _chunks(want):
            hit = self.client.query(self.collection, filter=f"id in [{', '.join(map(str, part))}]",
                                    output_fields=["id"], limit=len(part))
            present += [int(h["id"]) for h in hit]
        if not present:
            return 0
        for part in _chunks(present):
            self.client.delete(self.collection, ids=list(part))
        self.client.flush(self.collection)
        self._save_count()
        return len(present)
