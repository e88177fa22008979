"""Reaching Milvus, and how a dva gallery is laid out in a Milvus collection.

One collection per model fingerprint, ``dva_<fingerprint>``. Fields:

* ``id`` INT64, the primary key (ids are dva's: stable, never reused);
* ``vector`` FLOAT_VECTOR(dim), inner product on L2-normalised vectors (= cosine), HNSW;
* for every other column (``path``, ``label`` and the list CSV's extra columns), two nullable
  fields: ``s_<col>`` VARCHAR for a string value and ``n_<col>`` INT64 for an integer
  (:func:`dva.retrieval.filters.milvus_fields`). Milvus expressions cannot test a value's type,
  and ``where`` filters compare a string only with a string and a number only with a number
  (an int label 5 is not the str label '5'); with a field per type the translation is exact.

The collection's properties hold ``dva.meta`` (JSON: fingerprint, dim, columns, source...) and
``dva.next_id``, the next id to hand out: it is raised *before* the rows it numbers are inserted,
so a crash in between wastes ids but never hands one out twice. One writer at a time per
collection: two processes adding at once could read the same ``next_id``.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from dva.retrieval.filters import milvus_fields

TOKEN_ENV = "DVA_MILVUS_TOKEN"
FORMAT = "dva-milvus/1"
META_KEY = "dva.meta"
NEXT_ID_KEY = "dva.next_id"
PREFIX = "dva_"
MAX_VARCHAR = 65535  # Milvus's largest VARCHAR, in bytes
MAX_TOPK = 16384  # Milvus's largest search limit
HNSW = {"M": 16, "efConstruction": 200}
# HNSW search breadth, raised to k when k is larger. Measured on Milvus Lite 3.2.2, 10k x 128
# clustered unit vectors, 200 queries: recall@10 = 1.0 against exact search, unfiltered and with
# filters keeping 50 %, 10 % and 1 % of the gallery (the filter is applied inside the graph walk).
DEFAULT_EF = 128
INSTALL_HINT = "pip install 'dva[milvus]'"


def pymilvus() -> Any:
    """The ``pymilvus`` module, or an ImportError saying how to install it."""
    try:
        import pymilvus as pm
    except ImportError:
        raise ImportError(f"the Milvus store needs pymilvus and milvus-lite: {INSTALL_HINT}") from None
    return pm


def _quiet_lite_iterator() -> None:
    """Drop pymilvus's warning that Milvus Lite has no MVCC timestamp (every ``ids()`` said it)."""
    log = logging.getLogger("pymilvus.client.iterator.query_iterator")
    if not any(getattr(f, "dva", False) for f in log.filters):
        class _NoMvcc(logging.Filter):
            dva = True

            def filter(self, record: logging.LogRecord) -> bool:
                return "mvccTs" not in record.getMessage()

        log.addFilter(_NoMvcc())


def is_local(uri: str) -> bool:
    """Whether ``uri`` names a Milvus Lite database (a local ``*.db`` path) rather than a server."""
    return not re.match(r"https?://", uri) and uri.endswith(".db")


def check_uri(uri: str) -> str:
    """``uri`` as pymilvus takes it (a local path made absolute).

    Raises:
        ValueError: neither a ``*.db`` path nor ``http(s)://host:port``.
    """
    uri = str(uri)
    if re.match(r"https?://[^/\s]+", uri):
        return uri
    if uri.endswith(".db"):
        return str(Path(uri).expanduser().resolve())
    raise ValueError(f"{uri!r}: a Milvus URI is a Milvus Lite file path ending in .db (e.g. gallery.db) "
                     "or a server address http(s)://HOST:PORT")


def connect(uri: str, token: str | None = None) -> Any:
    """A ``MilvusClient`` for ``uri``; the token defaults to ``$DVA_MILVUS_TOKEN`` (servers only).

    Milvus Lite lets one process at a time open a database: a second process gets the error
    below, naming the way out (one ``milvus-lite server`` shared by every process).

    Raises:
        ValueError: a malformed URI.
        ConnectionError: the database is held by another process, or the server cannot be reached.
    """
    pm = pymilvus()
    target = check_uri(uri)
    token = token if token is not None else os.environ.get(TOKEN_ENV, "")
    _quiet_lite_iterator()
    try:
        return pm.MilvusClient(uri=target, token=token or "")
    except pm.MilvusException as exc:
        if is_local(target):
            raise ConnectionError(
                f"{target}: cannot open this Milvus Lite database ({exc.message}); Milvus Lite lets one "
                "process open a database at a time, and another process (a running `dva serve` or "
                "`dva index`?) probably holds it. Stop that process, or share the database through one "
                f"server: `milvus-lite server --data-dir {target} --port 19530`, then use "
                "--uri http://127.0.0.1:19530 everywhere") from None
        raise ConnectionError(f"{target}: cannot reach Milvus ({exc.message}); is the server running, and is "
                              f"the token right (${TOKEN_ENV})?") from None


def collection_name(fingerprint: str) -> str:
    """The collection of a model's gallery: ``dva_<fingerprint>`` (other characters become ``_``)."""
    return PREFIX + re.sub(r"[^A-Za-z0-9_]", "_", str(fingerprint))


def data_columns(columns: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The columns stored as typed field pairs: ``path``, ``label`` and the extra ones."""
    return ("path", "label", *columns)


def make_schema(client: Any, dim: int, columns: tuple[str, ...]) -> tuple[Any, Any]:
    """The collection schema and its vector index parameters (see the module docstring)."""
    pm = pymilvus()
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", pm.DataType.INT64, is_primary=True)
    schema.add_field("vector", pm.DataType.FLOAT_VECTOR, dim=int(dim))
    for col in data_columns(columns):
        s, n = milvus_fields(col)
        schema.add_field(s, pm.DataType.VARCHAR, max_length=MAX_VARCHAR, nullable=True)
        schema.add_field(n, pm.DataType.INT64, nullable=True)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="HNSW", metric_type="IP", params=dict(HNSW))
    return schema, index
