"""The Milvus gallery store (``--store milvus``): Milvus Lite in one local file, or a Milvus server.

The same client code talks to both: ``--uri gallery.db`` runs Milvus Lite embedded in the
process (one process per database at a time: share one between processes through
``milvus-lite server --data-dir gallery.db``), ``--uri http://HOST:19530`` a server or cluster
(token from ``$DVA_MILVUS_TOKEN``). Needs the ``milvus`` extra
(``pip install 'dva[milvus]'``); pymilvus is imported on first use.

* :mod:`~dva.retrieval.milvus.connect`: URIs, connecting, the collection layout;
* :mod:`~dva.retrieval.milvus.gallery`: :class:`MilvusGallery` (the :class:`~dva.retrieval.backend.Gallery`
  protocol: filtered search, items, add, remove);
* :mod:`~dva.retrieval.milvus.build`: :func:`build_milvus`.
"""
from dva.retrieval.milvus.connect import TOKEN_ENV, collection_name
from dva.retrieval.milvus.gallery import MilvusGallery
from dva.retrieval.milvus.build import build_milvus

__all__ = ["TOKEN_ENV", "MilvusGallery", "build_milvus", "collection_name"]
