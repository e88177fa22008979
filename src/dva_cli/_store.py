"""``--store`` and ``--uri``: where a gallery lives, the same two options on every command that opens one."""
from __future__ import annotations

import argparse

STORES = ("faiss", "milvus")  # dva.retrieval.backend.STORES, spelled out: building the parser imports nothing


def add_store_arguments(p: argparse.ArgumentParser) -> None:
    """``--store`` and ``--uri`` (``index``, ``search``, ``serve``, ``dedup``)."""
    p.add_argument("--store", choices=STORES, default="faiss",
                   help="where the gallery lives: faiss (default: an index directory, --out/--index) or milvus "
                        "(a Milvus Lite file or a Milvus server, --uri; token from $DVA_MILVUS_TOKEN)")
    p.add_argument("--uri", help="--store milvus: a Milvus Lite file (gallery.db) or http(s)://HOST:PORT")
