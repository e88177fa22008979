"""FAISS index: fingerprint guard, IVF-PQ parameters and fallback, atomic rebuilds."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dva.retrieval.index import (
    FingerprintMismatchError,
    GalleryIndex,
    build_index,
    default_nlist,
    default_pq_m,
)
from dva.retrieval.search import search_paths
from dva.retrieval.store import EmbeddingSet, GalleryItem, embed_gallery


def _synthetic(n: int, dim: int = 16, seed: int = 0, clusters: int = 32, noise: float = 0.3) -> EmbeddingSet:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    x = centers[np.arange(n) % clusters] + noise * rng.normal(size=(n, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return EmbeddingSet(x, [f"/g/{i}.jpg" for i in range(n)], [i % 5 for i in range(n)],
                        {"fingerprint": "synthetic", "dtype": "float32"})


def test_fingerprint_mismatch_is_refused_naming_both(embedder, make_embedder, gallery, tmp_path, monkeypatch, capsys):
    paths, labels = gallery
    embed_gallery(embedder, [GalleryItem(str(p)) for p in paths], tmp_path / "emb", progress=False)
    build_index(tmp_path / "emb", tmp_path / "idx")
    index = GalleryIndex.load(tmp_path / "idx")
    other = make_embedder(seed=1)
    assert other.fingerprint != embedder.fingerprint
    with pytest.raises(FingerprintMismatchError) as err:
        search_paths(index, other, paths[:1])
    msg = str(err.value)
    assert embedder.fingerprint in msg and other.fingerprint in msg and str(tmp_path / "idx") in msg

    from dva_cli import cli
    from dva_cli import _model as embed_cmd

    monkeypatch.setattr(embed_cmd, "embedder_from_args", lambda args: other)
    assert cli.main(["search", "--index", str(tmp_path / "idx"), str(paths[0])]) == 2
    err_text = capsys.readouterr().err
    assert "fingerprint" in err_text and other.fingerprint in err_text and "Traceback" not in err_text


def test_ivfpq_recall_and_defaults(tmp_path):
    es = _synthetic(4_000, dim=32, clusters=100, noise=0.3)  # PQ alone cannot rank within a cluster
    flat = build_index(es, tmp_path / "flat")
    q = es.vectors[:200]
    _, exact = flat.search(q, 10)
    recalls = {}
    for refine in ("none", "fp16"):
        build_index(es, tmp_path / refine, kind="ivfpq", nlist=16, m=8, nbits=6, nprobe=16,
                    refine=refine, k_factor=4)
        loaded = GalleryIndex.load(tmp_path / refine)
        assert loaded.meta["kind"] == "ivfpq" and loaded.meta["fallback_reason"] is None
        assert loaded.meta["params"] == {"nlist": 16, "m": 8, "nbits": 6, "nprobe": 16, "refine": refine,
                                         "k_factor": 4, "train_size": 40 * 64}
        scores, approx = loaded.search(q, 10)
        assert np.all(np.diff(scores, axis=1) <= 1e-6), "scores sorted best first"
        recalls[refine] = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
        if refine == "fp16":
            assert (approx[:, 0] == np.arange(200)).mean() > 0.95  # self found first
    # chance would be 10/4000; PQ codes alone get the cluster, the re-ranking the order in it
    assert recalls["none"] > 0.2 and recalls["fp16"] > 0.97, recalls
    import faiss

    assert faiss.downcast_index(GalleryIndex.load(tmp_path / "fp16").index).k_factor == 4
    assert default_nlist(1_000_000) == 4000 and default_nlist(10_000) == 400
    assert default_pq_m(768) == 64 and default_pq_m(1280) == 64 and default_pq_m(100) == 50


def test_ivfpq_too_small_errors_or_falls_back(tmp_path):
    es = _synthetic(2_000)
    with pytest.raises(ValueError, match="too few.*nbits=8"):
        build_index(es, tmp_path / "a", kind="ivfpq", fallback=False)
    gi = build_index(es, tmp_path / "b", kind="ivfpq")
    assert gi.meta["kind"] == "flat" and "too few" in gi.meta["fallback_reason"]
    es = _synthetic(10_000)
    with pytest.raises(ValueError, match="lower --nlist"):
        build_index(es, tmp_path / "c", kind="ivfpq", nlist=1000, fallback=False)
    with pytest.raises(ValueError, match="must divide"):
        build_index(es, tmp_path / "d", kind="ivfpq", m=7)
    gi = build_index(es, tmp_path / "e", kind="ivfpq", m=4, nbits=2)  # auto nlist capped by N/39
    assert gi.meta["params"]["nlist"] == 10_000 // 39 < default_nlist(10_000)


def test_rebuild_replaces_atomically(tmp_path):
    es = _synthetic(100)
    build_index(es, tmp_path / "idx")
    first = json.loads((tmp_path / "idx" / "index.json").read_text())["faiss_file"]
    es2 = _synthetic(50, seed=1)
    build_index(es2, tmp_path / "idx")
    files = sorted(p.name for p in (tmp_path / "idx").iterdir())
    assert first not in files and len(files) == 2, files  # old build's file removed
    assert len(GalleryIndex.load(tmp_path / "idx")) == 50
    with pytest.raises(FileNotFoundError, match="dva index"):
        GalleryIndex.load(tmp_path / "nothing")
