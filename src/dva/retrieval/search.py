"""Query a gallery index with images: embed them, refuse a foreign model, return top-k hits."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from dva.retrieval.index.gallery_index import GalleryIndex
from dva.retrieval.store.gallery import Label
from dva.retrieval.store.images import load_image_strict
from dva.runtime.protocol import embed_pil_images

if TYPE_CHECKING:
    from dva.runtime.protocol import EmbedderLike


@dataclass
class Hit:
    """One retrieved gallery image."""

    rank: int  # 1-based
    id: int  # FAISS id = row of the embeddings / index
    score: float  # cosine similarity
    path: str
    label: Label = None


@dataclass
class QueryResult:
    """The hits of one query image."""

    query: str
    hits: list[Hit]
    label: Label = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"query": self.query, "label": self.label,
                "hits": [asdict(h) for h in self.hits], **self.extra}


def hits_from_arrays(index: GalleryIndex, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
    """Turn FAISS ``(scores, ids)`` rows into :class:`Hit` lists (ids of -1 dropped)."""
    out = []
    for srow, irow in zip(scores, ids):
        hits = []
        for s, i in zip(srow, irow):
            if i < 0:
                continue
            hits.append(Hit(len(hits) + 1, int(i), float(s), index.paths[i], index.labels[i]))
        out.append(hits)
    return out


def embed_images(embedder: EmbedderLike, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
    """Embed PIL images with the embedder's eval transform, ``batch_size`` at a time; float32 (N, D)."""
    rows = [embed_pil_images(embedder, images[lo:lo + batch_size]) for lo in range(0, len(images), batch_size)]
    return np.concatenate(rows).astype(np.float32, copy=False) if rows else np.zeros((0, int(embedder.dim)), np.float32)


def search_images(
    index: GalleryIndex, embedder: EmbedderLike, images: Sequence[Image.Image], k: int = 10
) -> list[list[Hit]]:
    """Top-``k`` hits for each PIL image (refused if the embedder is not the index's model)."""
    index.check_fingerprint(embedder.fingerprint)
    if not images:
        return []
    scores, ids = index.search(embed_images(embedder, images), k)
    return hits_from_arrays(index, scores, ids)


def search_paths(
    index: GalleryIndex,
    embedder: EmbedderLike,
    paths: Sequence[str | Path],
    k: int = 10,
    labels: Sequence[Label] | None = None,
    batch_size: int = 32,
) -> list[QueryResult]:
    """Top-``k`` hits for each query image file.

    Raises:
        FingerprintMismatchError: the embedder is not the model that built the index.
        ValueError: a query image cannot be read (the message names the file).
    """
    index.check_fingerprint(embedder.fingerprint)
    results: list[QueryResult] = []
    for lo in range(0, len(paths), batch_size):
        chunk = [str(p) for p in paths[lo:lo + batch_size]]
        for j, hits in enumerate(search_images(index, embedder, load_query_images(chunk), k)):
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


def resolve_query_labels(index: GalleryIndex, paths: Sequence[str | Path]) -> list[Label]:
    """Label of each query taken from the gallery when the query file is in it, else None."""
    by_path = {str(Path(p).resolve()): lab for p, lab in zip(index.paths, index.labels)}
    return [by_path.get(str(Path(p).resolve())) for p in paths]


def hits_to_fetch(index: GalleryIndex, paths: Sequence[str | Path], k: int) -> int:
    """``k``, or ``k + 1`` when a query is itself a gallery image.

    Such a query finds itself first; one more hit is fetched so that ``k`` remain once the
    self hit is set aside (as :func:`dva.retrieval.pipeline.summarize` and the report do).
    """
    gallery = {str(Path(p).resolve()) for p in index.paths}
    return k + 1 if any(str(Path(p).resolve()) in gallery for p in paths) else k
