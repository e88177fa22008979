"""Retrieval as a product: embed a gallery, index it, search it, serve it, report on it.

* :mod:`dva.retrieval.meta`: what every collection of gallery vectors says about itself;
* :mod:`dva.retrieval.store`: gallery listing, strict image decoding and resumable sharded
  embeddings (``dva embed``), one module per concept;
* :mod:`dva.retrieval.index`: FAISS index carrying the model fingerprint, rebuilt in place
  atomically for its readers (``dva index``);
* :mod:`dva.retrieval.search`: query images against an index (``dva search``);
* :mod:`dva.retrieval.domains`: several domains (adapter sets) on one frozen backbone, the
  frozen prefix shared, queries routed (``dva serve/search --domain``);
* :mod:`dva.retrieval.serve`: the FastAPI search service and its web page (``dva serve``);
* :mod:`dva.retrieval.pipeline`: gallery -> index -> search -> report in one call;
* :mod:`dva.retrieval.report`: the static HTML report (``dva report``).

FastAPI is imported only by :mod:`dva.retrieval.serve`.
"""
from dva.retrieval.index import FingerprintMismatchError, GalleryIndex, build_index
from dva.retrieval.pipeline import index_search_report, summarize
from dva.retrieval.search import Hit, QueryResult, search_images, search_paths
from dva.retrieval.store import (
    EmbeddingSet,
    EmbedSummary,
    GalleryItem,
    embed_gallery,
    list_images,
    load_embeddings,
)

__all__ = [
    "EmbedSummary",
    "EmbeddingSet",
    "FingerprintMismatchError",
    "GalleryIndex",
    "GalleryItem",
    "Hit",
    "QueryResult",
    "build_index",
    "embed_gallery",
    "index_search_report",
    "list_images",
    "load_embeddings",
    "search_images",
    "search_paths",
    "summarize",
]
