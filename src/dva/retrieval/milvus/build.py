"""Building a Milvus gallery from an embeddings directory (``dva index --store milvus``)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dva.retrieval.index.common import normalise
from dva.retrieval.milvus import connect as mc
from dva.retrieval.milvus.gallery import MilvusGallery
from dva.retrieval.store.embeddings import EmbeddingSet, EmbeddingShards, open_source
from dva.retrieval.store.gallery import check_column_names

_INSERT_ROWS = 2000  # rows per insert request (768-d float32: ~6 MB, well under gRPC's 64 MB)


def _check_replace(client: Any, name: str, uri: str, es: EmbeddingShards, source: dict, overwrite: bool) -> None:
    """Refuse to replace the collection of another gallery (other images, same model) without overwrite."""
    if overwrite or not client.has_collection(name):
        return
    raw = (client.describe_collection(name).get("properties") or {}).get(mc.META_KEY)
    old = json.loads(raw) if raw else {}
    old_source = old.get("source") or {}
    same = ((source["embeddings"] is not None and old_source.get("embeddings") == source["embeddings"])
            or old_source.get("items_sha256") == source["items_sha256"])
    if not same:
        was = (old_source.get("embeddings") or "vectors given in memory") if raw else "a collection not made by dva"
        now = source["embeddings"] or "vectors given in memory"
        raise ValueError(f"{uri}: collection {name} already holds another gallery of model {es.fingerprint} "
                         f"({old.get('count', '?')} images from {was}; this build: {len(es)} images from {now}); "
                         "use another --uri, or pass --overwrite to replace it")


def build_milvus(embeddings: str | Path | EmbeddingSet | EmbeddingShards, uri: str, *,
                 token: str | None = None, overwrite: bool = False) -> MilvusGallery:
    """Write a gallery into the collection ``dva_<fingerprint>`` at ``uri``, shard by shard.

    Ids are the rows of the embeddings (0..N-1), as in a FAISS build. Rebuilding the same
    gallery (same embeddings directory, or the same paths and labels) replaces its collection;
    readers of a Milvus Lite file see it missing meanwhile (unlike FAISS's atomic rebuild).

    Args:
        embeddings: an embeddings directory (``dva embed`` output), a loaded set, or
            :func:`dva.retrieval.store.open_embeddings` of a directory.
        uri: a Milvus Lite database path (``*.db``) or a server ``http(s)://HOST:PORT``.
        token: the server's token (default ``$DVA_MILVUS_TOKEN``).
        overwrite: replace the collection even when it holds another gallery of this model.

    Raises:
        ValueError: no vectors, or another gallery's collection without ``overwrite``.
        ConnectionError: see :func:`dva.retrieval.milvus.connect.connect`.
    """
    es, source = open_source(embeddings)
    if len(es) == 0:
        raise ValueError("the embeddings hold no vectors (every image was skipped?)")
    check_column_names(es.columns, f"{source['embeddings'] or 'the embeddings'}: extra metadata", fix="rename it")
    client = mc.connect(uri, token)
    name = mc.collection_name(es.fingerprint)
    _check_replace(client, name, uri, es, source, overwrite)
    if client.has_collection(name):
        client.drop_collection(name)
    meta = {"format": mc.FORMAT, "store": "milvus", "fingerprint": es.fingerprint, "dim": es.dim,
            "collection": name, "count": len(es), "columns": list(es.columns), "metric": "inner_product",
            "index": {"kind": "HNSW", **mc.HNSW, "ef": mc.DEFAULT_EF}, "source": source,
            "model": es.meta.get("model", {}), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    schema, index = mc.make_schema(client, es.dim, es.columns)
    # next_id is set before the rows go in: ids 0..N-1 are this build's, whatever happens next.
    client.create_collection(name, schema=schema, index_params=index,
                             properties={mc.META_KEY: json.dumps(meta), mc.NEXT_ID_KEY: str(len(es))})
    g = MilvusGallery(client, name, {**meta, "uri": str(uri)}, str(uri))
    start = 0
    for chunk in es.chunks():
        for lo in range(0, len(chunk), _INSERT_ROWS):
            rows = [g._row(start + lo + j, v, es.paths[start + lo + j], es.labels[start + lo + j],
                           es.extras[start + lo + j])
                    for j, v in enumerate(normalise(chunk[lo:lo + _INSERT_ROWS]))]  # float16 rounding undone
            client.insert(name, rows)
        start += len(chunk)
    client.flush(name)  # unflushed rows are searched ~20x slower
    return g

