"""A FAISS gallery index that remembers which model made its vectors (``dva index``).

An index is a directory: ``index.json`` (the model fingerprint, the index parameters, the
names and checksums of the current build's files), ``index-<build>.faiss`` (inner product on
L2-normalised vectors = cosine similarity) and ``index-<build>.items.json`` (the gallery path
and label per FAISS id). Rebuilding in place is atomic for readers: see
:mod:`dva.retrieval.index.files`.

* :mod:`~dva.retrieval.index.params`: index kinds, IVF-PQ defaults and size checks;
* :mod:`~dva.retrieval.index.files`: the directory layout, checked reads, the commit;
* :mod:`~dva.retrieval.index.gallery_index`: :class:`GalleryIndex`, loading and searching;
* :mod:`~dva.retrieval.index.build`: :func:`build_index`.
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
from dva.retrieval.index.build import build_index

__all__ = [
    "FORMAT",
    "KINDS",
    "MIN_POINTS_PER_CENTROID",
    "REFINES",
    "FingerprintMismatchError",
    "GalleryIndex",
    "build_index",
    "default_nlist",
    "default_nprobe",
    "default_pq_m",
]
