"""A FAISS gallery index that remembers which model made its vectors (``dva index``).

An index is a directory: ``index.json`` (the model fingerprint, the index parameters, the
names and checksums of the current build's files, ``next_id``, the extra ``columns``),
``index-<build>.faiss`` (inner product on L2-normalised vectors = cosine similarity, under
stable int64 ids) and ``index-<build>.items.sqlite`` (the items table: id, path, label, extra
metadata columns). Rebuilding, adding and removing in place are atomic for readers: see
:mod:`dva.retrieval.index.files`.

* :mod:`~dva.retrieval.index.params`: index kinds, IVF-PQ defaults and size checks;
* :mod:`~dva.retrieval.index.files`: the directory layout, checked reads, the commit;
* :mod:`~dva.retrieval.index.items`: the items table (SQLite, read lazily);
* :mod:`~dva.retrieval.index.gallery_index`: :class:`GalleryIndex`, loading, (filtered) searching;
* :mod:`~dva.retrieval.index.build`: :func:`build_index`;
* :mod:`~dva.retrieval.index.live`: :func:`add_to_index`, :func:`remove_from_index` (and
  ``GalleryIndex.add``/``remove``).
"""
from dva.retrieval.index.params import (
    KINDS,
    MIN_POINTS_PER_CENTROID,
    REFINES,
    default_nlist,
    default_nprobe,
    default_pq_m,
)
from dva.retrieval.index.files import FORMAT
from dva.retrieval.index.gallery_index import FingerprintMismatchError, GalleryIndex
from dva.retrieval.index.items import UnknownId
from dva.retrieval.index.build import build_index
from dva.retrieval.index.live import add_to_index, remove_from_index

__all__ = [
    "FORMAT",
    "KINDS",
    "MIN_POINTS_PER_CENTROID",
    "REFINES",
    "FingerprintMismatchError",
    "GalleryIndex",
    "UnknownId",
    "add_to_index",
    "build_index",
    "remove_from_index",
    "default_nlist",
    "default_nprobe",
    "default_pq_m",
]
