"""Adding to and removing from an index directory: :func:`add_to_index`, :func:`remove_from_index`.

Each change is committed as a new build (see :mod:`dva.retrieval.index.changes`, which
``GalleryIndex.add``/``remove`` use): readers see the old build or the new one, never a mix;
a process killed while it writes leaves the previous build current; a change made by another
writer since the index was loaded is never dropped (tests/retrieval/test_index_live.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dva.retrieval.index.common import FingerprintMismatchError
from dva.retrieval.index.gallery_index import GalleryIndex


def add_to_index(index_dir: str | Path, embeddings: Any) -> GalleryIndex:
    """Add the vectors of an embeddings directory (``dva embed`` output) to an index; the index.

    Args:
        index_dir: an index directory (``dva index`` output).
        embeddings: an embeddings directory, or a loaded ``EmbeddingSet``/``EmbeddingShards``.

    Raises:
        FingerprintMismatchError: the embeddings were made by another model than the index's.
        ValueError: another dimension, or an image already in the index (named).
    """
    from dva.retrieval.store.embeddings import EmbeddingSet, EmbeddingShards, open_embeddings

    loaded = isinstance(embeddings, (EmbeddingSet, EmbeddingShards))
    es = embeddings if loaded else open_embeddings(embeddings)
    gi = GalleryIndex.load(index_dir)
    if es.fingerprint != gi.fingerprint:
        what = "the vectors to add are" if loaded else f"{embeddings} holds vectors"
        raise FingerprintMismatchError(
            f"index {index_dir} was built with model fingerprint {gi.fingerprint} but {what} of model "
            f"{es.fingerprint}; embed the new images with the index's model (the same checkpoint), or "
            "rebuild the index from embeddings of one model")
    x = es.vectors if isinstance(es, EmbeddingSet) else np.concatenate(list(es.chunks()) or [np.zeros((0, es.dim))])
    extras = getattr(es, "extras", None)
    columns = tuple(getattr(es, "columns", ()) or ())
    gi.add(x, list(es.paths), list(es.labels), list(extras) if extras is not None else None, columns=columns)
    return gi


def remove_from_index(index_dir: str | Path, ids: Sequence[int]) -> GalleryIndex:
    """Remove the items ``ids`` from an index directory; the index (``meta["last_change"]`` says how many)."""
    gi = GalleryIndex.load(index_dir)
    gi.remove(ids)
    return gi
