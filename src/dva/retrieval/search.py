"""Query a gallery with images: embed them, refuse a foreign model, return top-k hits.

Any gallery store works (:class:`dva.retrieval.backend.Gallery`: a FAISS index directory or a
Milvus collection); ``where`` restricts the hits to the items a metadata filter keeps
(:mod:`dva.retrieval.filters`), inside the search.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from dva.retrieval.backend import Gallery, Item
from dva.retrieval.store.gallery import Label
from dva.retrieval.store.images import load_image_strict
from dva.runtime.protocol import embed_pil_images

if TYPE_CHECKING:
    from dva.runtime.protocol import EmbedderLike


@dataclass
class Hit:
    """One retrieved gallery image."""

    rank: int  # 1-based
    id: int  # the item's stable gallery id
    score: float  # cosine similarity
    path: str
    label: Label = None
    extra: dict = field(default_factory=dict)  # the item's extra metadata columns

    def to_dict(self) -> dict:
        """The hit's fields with its extra columns beside them (a field wins a name clash)."""
        d = asdict(self)
        extra = d.pop("extra")
        return {**d, **{k: v for k, v in extra.items() if k not in d}}


@dataclass
class QueryResult:
    """The hits of one query image."""

    query: str
    hits: list[Hit]
    label: Label = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"query": self.query, "label": self.label,
                "hits": [h.to_dict() for h in self.hits], **self.extra}


def _items_by_id(index: Gallery, ids: np.ndarray) -> dict[int, Item]:
    """The items of the ids found (-1 aside), one lookup; an item removed since the search is left out."""
    want = sorted({int(i) for i in np.asarray(ids).ravel() if i >= 0})
    try:
        return {it.id: it for it in index.items(want)}
    except KeyError:  # removed by a writer between the search and this lookup: drop just that one
        out = {}
        for i in want:
            try:
                out[i] = index.items([i])[0]
            except KeyError:
                continue
        return out


def hits_from_arrays(index: Gallery, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
    """Turn ``(scores, ids)`` rows into :class:`Hit` lists (ids of -1, and items gone meanwhile, dropped)."""
    items = _items_by_id(index, ids)
    out = []
    for srow, irow in zip(scores, ids):
        hits = []
        for s, i in zip(srow, irow):
            it = items.get(int(i))
            if it is None:
                continue
            hits.append(Hit(len(hits) + 1, it.id, float(s), it.path, it.label, dict(it.extra)))
        out.append(hits)
    return out


def embed_images(embedder: EmbedderLike, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
    """Embed PIL images with the embedder's eval transform, ``batch_size`` at a time; float32 (N, D)."""
    rows = [embed_pil_images(embedder, images[lo:lo + batch_size]) for lo in range(0, len(images), batch_size)]
    return np.concatenate(rows).astype(np.float32, copy=False) if rows else np.zeros((0, int(embedder.dim)), np.float32)


def search_images(
    index: Gallery, embedder: EmbedderLike, images: Sequence[Image.Image], k: int = 10,
    where: str | None = None,
) -> list[list[Hit]]:
    """Top-``k`` hits for each PIL image among the items ``where`` keeps (all when None).

    Refused if the embedder is not the gallery's model.
    """
    index.check_fingerprint(embedder.fingerprint)
    if not images:
        return []
    vectors = embed_images(embedder, images)
    with _reading(index):  # a FAISS index: no add/remove of this object between search and lookup
        scores, ids = index.search(vectors, k) if where is None else index.search(vectors, k, where)
        return hits_from_arrays(index, scores, ids)


def _reading(index: Gallery) -> Any:
    """``index.reading()`` where the store has it (FAISS), else a no-op context."""
    from contextlib import nullcontext

    reading = getattr(index, "reading", None)
    return reading() if reading is not None else nullcontext()


def search_paths(
    index: Gallery,
    embedder: EmbedderLike,
    paths: Sequence[str | Path],
    k: int = 10,
    labels: Sequence[Label] | None = None,
    batch_size: int = 32,
    where: str | None = None,
) -> list[QueryResult]:
    """Top-``k`` hits for each query image file, among the items ``where`` keeps (all when None).

    Raises:
        FingerprintMismatchError: the embedder is not the model that built the index.
        ValueError: a query image cannot be read (the message names the file), or a bad ``where``.
    """
    index.check_fingerprint(embedder.fingerprint)
    results: list[QueryResult] = []
    for lo in range(0, len(paths), batch_size):
        chunk = [str(p) for p in paths[lo:lo + batch_size]]
        for j, hits in enumerate(search_images(index, embedder, load_query_images(chunk), k, where)):
            lab = labels[lo + j] if labels is not None else None
            results.append(QueryResult(chunk[j], hits, lab))
    return results


def load_query_images(paths: Sequence[str]) -> list[Image.Image]:
    """Decode query files strictly; an unreadable one is a ValueError that names the file."""
    images = []
    for p in paths:
        try:
            images.append(load_image_strict(p))
        except Exception as exc:  # noqa: BLE001 - load_image_strict's message names the file and the cause
            raise ValueError(f"query image {exc}") from None
    return images


def gallery_items_at(index: Gallery, paths: Sequence[str | Path]) -> dict[str, Item]:
    """``{resolved path: item}`` for the query files that are gallery images.

    A FAISS index looks the paths up in its items table; another store lists its items.
    """
    resolved = [str(Path(p).resolve()) for p in paths]
    lookup = getattr(index, "ids_of_paths", None)
    if lookup is not None:
        found = lookup(resolved)
        return {it.path: it for it in index.items(list(found.values()))} if found else {}
    want = set(resolved)
    return {it.path: it for it in index.items(index.ids()) if it.path in want}


def resolve_query_labels(index: Gallery, paths: Sequence[str | Path]) -> list[Label]:
    """Label of each query taken from the gallery when the query file is in it, else None."""
    by_path = gallery_items_at(index, paths)
    return [by_path[r].label if r in by_path else None for r in (str(Path(p).resolve()) for p in paths)]


def hits_to_fetch(index: Gallery, paths: Sequence[str | Path], k: int) -> int:
    """``k``, or ``k + 1`` when a query is itself a gallery image.

    Such a query finds itself first; one more hit is fetched so that ``k`` remain once the
    self hit is set aside (as :func:`dva.retrieval.pipeline.summarize` and the report do).
    """
    return k + 1 if gallery_items_at(index, paths) else k


def trim_hits(results: Sequence[QueryResult], k: int) -> list[QueryResult]:
    """Each result cut to ``k`` hits besides the query's own (when it is a gallery image and was found).

    :func:`hits_to_fetch` asks one more hit of the whole batch as soon as one query is in the
    gallery; a query that is not keeps ``k``, not ``k + 1``.
    """
    for res in results:
        own = os.path.realpath(res.query)
        res.hits = res.hits[:k + 1] if any(os.path.realpath(h.path) == own for h in res.hits[:k + 1]) \
            else res.hits[:k]
    return list(results)


def has_labels(index: Gallery) -> bool:
    """Whether any gallery item has a label (a FAISS index asks its table for one row)."""
    ask = getattr(index, "has_labels", None)
    if ask is not None:
        return bool(ask())
    return any(it.label is not None for it in index.items(index.ids()))
