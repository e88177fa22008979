"""Open or build a gallery in either store by name: ``faiss`` (an index directory) or ``milvus``.

The CLI and the server choose the store with ``--store`` and say where it lives with
``--out``/``--index`` (faiss) or ``--uri`` (milvus); this module turns that pair into a
:class:`~dva.retrieval.backend.Gallery`. FAISS and pymilvus are imported only when their store
is used, so a FAISS-only install never needs pymilvus.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dva.retrieval.backend import STORES, Gallery
from dva.retrieval.store.embeddings import EmbeddingSet, EmbeddingShards


def _check_store(store: str) -> None:
    if store not in STORES:
        raise ValueError(f"unknown store {store!r}; choose one of {', '.join(STORES)}")


def open_gallery(store: str, location: str | Path, *, token: str | None = None,
                 fingerprint: str | None = None) -> Gallery:
    """Open an existing gallery.

    Args:
        store: ``faiss`` or ``milvus``.
        location: faiss: an index directory; milvus: a Milvus Lite file (``*.db``) or
            ``http(s)://HOST:PORT``.
        token: Milvus server token (default ``$DVA_MILVUS_TOKEN``); ignored by faiss.
        fingerprint: milvus: the model whose collection to open, when the database holds the
            galleries of several models; ignored by faiss (one model per index directory).

    Raises:
        ValueError: an unknown store, or what the store's own opener raises.
        ImportError: ``milvus`` without pymilvus installed (naming ``pip install 'dva[milvus]'``).
    """
    _check_store(store)
    if store == "faiss":
        from dva.retrieval.index import GalleryIndex

        return GalleryIndex.load(location)
    from dva.retrieval.milvus import connect

    connect.pymilvus()  # the install hint before anything else
    from dva.retrieval.milvus import MilvusGallery

    return MilvusGallery.open(str(location), token=token, fingerprint=fingerprint)


def build_gallery(embeddings: str | Path | EmbeddingSet | EmbeddingShards, store: str, location: str | Path, *,
                  overwrite: bool = False, token: str | None = None, **faiss_params: Any) -> Gallery:
    """Build a gallery from embeddings in ``store`` at ``location`` (see :func:`open_gallery`).

    ``faiss_params`` go to :func:`dva.retrieval.index.build_index` (kind, nlist, m, ...); the
    Milvus store takes none (HNSW, see :mod:`dva.retrieval.milvus.connect`) and refuses them.

    Raises:
        ValueError: an unknown store, Milvus given FAISS parameters, or the builder's refusal.
        ImportError: ``milvus`` without pymilvus installed.
    """
    _check_store(store)
    if store == "faiss":
        from dva.retrieval.index import build_index

        return build_index(embeddings, location, overwrite=overwrite, **faiss_params)
    if faiss_params:
        raise ValueError(f"the milvus store takes no index parameters (got {', '.join(sorted(faiss_params))}); "
                         "they are FAISS's: leave them out, or use --store faiss")
    from dva.retrieval.milvus import connect

    connect.pymilvus()
    from dva.retrieval.milvus import build_milvus

    return build_milvus(embeddings, str(location), token=token, overwrite=overwrite)
