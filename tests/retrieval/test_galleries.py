"""Choosing a store by name (dva.retrieval.galleries): faiss or milvus, the same Gallery either way."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from dva.retrieval.backend import Gallery
from dva.retrieval.galleries import build_gallery, open_gallery
from dva.retrieval.store import EmbeddingSet


def _set() -> EmbeddingSet:
    x = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return EmbeddingSet(x, [f"/g/{i}.jpg" for i in range(12)], [i % 3 for i in range(12)], {"fingerprint": "gal"},
                        [{"source": f"s{i % 2}"} for i in range(12)], ("source",))


def _where(tmp_path, store: str) -> str:
    return str(tmp_path / ("idx" if store == "faiss" else "g.db"))


@pytest.mark.parametrize("store", ["faiss", "milvus"])
def test_build_then_open_gives_the_same_gallery_in_either_store(tmp_path, store):
    if store == "milvus":
        pytest.importorskip("pymilvus")
    es = _set()
    built = build_gallery(es, store, _where(tmp_path, store))
    opened = open_gallery(store, _where(tmp_path, store))
    for g in (built, opened):
        assert isinstance(g, Gallery)
        assert (len(g), g.fingerprint, g.dim, g.columns) == (12, "gal", 8, ("id", "path", "label", "source"))
    _, ids = opened.search(es.vectors[:1], 12, where="source = 's1' and label = 0")
    assert sorted(ids[0][ids[0] >= 0].tolist()) == [3, 9]
    assert opened.items([9])[0].to_dict() == {"id": 9, "path": "/g/9.jpg", "label": 0, "source": "s1"}


def test_unknown_store_and_misplaced_parameters_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown store 'qdrant'; choose one of faiss, milvus"):
        open_gallery("qdrant", tmp_path)
    with pytest.raises(ValueError, match="unknown store"):
        build_gallery(_set(), "lance", tmp_path)
    with pytest.raises(ValueError, match="the milvus store takes no index parameters \\(got kind, nlist\\)"):
        build_gallery(_set(), "milvus", str(tmp_path / "g.db"), kind="ivfpq", nlist=4)


def test_milvus_without_pymilvus_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # what `import pymilvus` does when it is not installed
    for call in (lambda: open_gallery("milvus", str(tmp_path / "g.db")),
                 lambda: build_gallery(_set(), "milvus", str(tmp_path / "g.db"))):
        with pytest.raises(ImportError, match=r"pip install 'dva\[milvus\]'"):
            call()
