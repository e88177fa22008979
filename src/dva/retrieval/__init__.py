"""Retrieval as a product: embed a gallery, index it, search it, serve it, report on it.

* :mod:`dva.retrieval.meta`: what every collection of gallery vectors says about itself;
* :mod:`dva.retrieval.store`: gallery listing, strict image decoding and resumable sharded
  embeddings (``dva embed``), one module per concept;
* :mod:`dva.retrieval.backend`: what every gallery store answers (search with a filter, items
  by stable id, add, remove): the protocol the search, serve and dedup code speak;
* :mod:`dva.retrieval.filters`: the ``where`` grammar, its meaning, its SQL and Milvus translations;
* :mod:`dva.retrieval.index`: the FAISS store: an index directory carrying the model fingerprint,
  stable ids and a metadata table, rebuilt or changed atomically for its readers (``dva index``);
* :mod:`dva.retrieval.milvus`: the Milvus store (Milvus Lite in one file, or a server by URI);
* :mod:`dva.retrieval.galleries`: open or build a gallery in either store (``--store/--uri``);
* :mod:`dva.retrieval.search`: query images against a gallery (``dva search``);
* :mod:`dva.retrieval.dedup`: near-duplicate pairs and groups of a gallery (``dva dedup``);
* :mod:`dva.retrieval.domains`: several domains (adapter sets) on one frozen backbone, the
  frozen prefix shared, queries routed (``dva serve/search --domain``);
* :mod:`dva.retrieval.serve`: the FastAPI search service and its web page (``dva serve``);
* :mod:`dva.retrieval.pipeline`: gallery -> index -> search -> report in one call;
* :mod:`dva.retrieval.report`: the static HTML report (``dva report``).

FastAPI is imported only by :mod:`dva.retrieval.serve`; pymilvus only by :mod:`dva.retrieval.milvus`.
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
