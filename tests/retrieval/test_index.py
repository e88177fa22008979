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
    # No --checkpoint: the query model is a frozen backbone, said with the fix.
    assert f"no --checkpoint was given: the query model is the frozen {embed_cmd.DEFAULT_BACKBONE}" in err_text
    # The index names the model that embedded it, as its embeddings folder described it.
    model = index.meta["embeddings"]["model"]
    assert index.model_words() and f"{model['img_size']} px" in index.model_words() and index.model_words() in msg
    assert cli.main(["search", "--index", str(tmp_path / "idx"), "--checkpoint", "x.safetensors", str(paths[0])]) == 2
    assert "no --checkpoint was given" not in capsys.readouterr().err


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


def test_load_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing: no such index folder; build one with `dva index --emb"):
        GalleryIndex.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a dva index.*dva index --embeddings"):
        GalleryIndex.load(tmp_path / "empty")
    emb = tmp_path / "emb"  # an embeddings folder given as --index: said, with the command that builds one
    emb.mkdir()
    (emb / "meta.json").write_text("{}")
    (emb / "inputs.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match=r"an embeddings folder \(`dva embed --out`\), not an index; build "
                                                r"one from it with `dva index --embeddings .*emb --out INDEX`"):
        GalleryIndex.load(emb)
    gi = build_index(_synthetic(30), tmp_path / "idx")
    assert (len(gi), gi.dim, gi.fingerprint) == (30, 16, "synthetic")
    (tmp_path / "idx" / gi.meta["items_file"]).unlink()
    with pytest.raises(FileNotFoundError) as err:
        GalleryIndex.load(tmp_path / "idx")
    assert gi.meta["items_file"] in str(err.value) and "--overwrite" in str(err.value)


def test_old_format_index_is_still_read(tmp_path):
    """An index written before versioned files (dva-index/1: paths inside index.json) loads as it did."""
    import faiss

    es = _synthetic(20)
    d = tmp_path / "old"
    d.mkdir()
    flat = faiss.IndexFlatIP(16)
    flat.add(es.vectors)
    faiss.write_index(flat, str(d / "index-20240101000000-abcd.faiss"))
    (d / "index.json").write_text(json.dumps({
        "format": "dva-index/1", "kind": "flat", "metric": "inner_product", "fingerprint": "synthetic", "dim": 16,
        "count": 20, "params": {}, "fallback_reason": None, "faiss_file": "index-20240101000000-abcd.faiss",
        "paths": es.paths, "labels": es.labels}))
    old = GalleryIndex.load(d)
    assert old.paths == es.paths and old.labels == es.labels and old.meta["format"] == "dva-index/1"
    np.testing.assert_array_equal(old.search(es.vectors[:3], 1)[1][:, 0], [0, 1, 2])
    build_index(es, d, kind="flat")  # the same gallery: rebuilt in place, in the new format
    assert GalleryIndex.load(d).meta["format"] == "dva-index/3"
