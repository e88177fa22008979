"""Building an index (dva.retrieval.index.build): shard by shard, and never over another gallery's index."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dva.retrieval.index import GalleryIndex, build_index
from dva.retrieval.store import EmbeddingSet, load_embeddings, open_embeddings


# --------------------------------------------------------------------------- IVF-PQ from shards
def _write_embeddings(d: Path, x: np.ndarray, shard_size: int, dtype: str = "float32") -> None:
    """An embeddings directory in the `dva embed` format, written directly (no images needed)."""
    n, dim = x.shape
    n_shards = -(-n // shard_size)
    (d / "shards").mkdir(parents=True)
    for i in range(n_shards):
        lo, hi = i * shard_size, min(n, (i + 1) * shard_size)
        rows = [{"input": j, "path": f"/g/{j}.jpg", "label": j % 7} for j in range(lo, hi)]
        (d / "shards" / f"{i:05d}.json").write_text(json.dumps({"shard": i, "rows": rows, "skipped": []}))
        np.save(d / "shards" / f"{i:05d}.npy", x[lo:hi].astype(dtype))
    (d / "items.jsonl").write_text("".join(json.dumps({"id": j, "path": f"/g/{j}.jpg", "label": j % 7}) + "\n"
                                           for j in range(n)))
    (d / "meta.json").write_text(json.dumps({
        "format": "dva-embeddings/1", "fingerprint": "sharded", "dim": dim, "dtype": dtype, "normalized": "l2",
        "shard_size": shard_size, "num_inputs": n, "num_shards": n_shards, "status": "complete", "count": n}))


def _clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, dim)).astype(np.float32)
    x = centres[rng.integers(0, 64, n)] + 0.4 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_ivfpq_built_shard_by_shard_equals_the_in_memory_build(tmp_path, dtype):
    import faiss


    x = _clustered(4000, 32)
    _write_embeddings(tmp_path / "emb", x, shard_size=700, dtype=dtype)  # 6 shards, the last one short
    shards = open_embeddings(tmp_path / "emb")
    assert len(shards.shards) == 6 and len(shards) == 4000
    ids = np.sort(np.random.default_rng(1).choice(4000, 500, replace=False))
    es = load_embeddings(tmp_path / "emb")
    np.testing.assert_array_equal(shards.rows(ids), es.vectors[ids])  # only the chosen rows are read

    kw = {"kind": "ivfpq", "nbits": 6, "nlist": 16, "m": 8, "fallback": False}  # re-ranking with fp16 vectors (default)
    streamed = build_index(tmp_path / "emb", tmp_path / "idx_streamed", **kw)
    in_memory = build_index(es, tmp_path / "idx_memory", **kw)
    assert streamed.meta["params"] == in_memory.meta["params"] and streamed.meta["params"]["refine"] == "fp16"
    assert streamed.meta["params"]["train_size"] == min(4000, 40 * 64)
    assert bytes(faiss.serialize_index(streamed.index)) == bytes(faiss.serialize_index(in_memory.index))

    q = _clustered(200, 32, seed=5)
    s1, i1 = streamed.search(q, 10)
    s2, i2 = in_memory.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    exact = np.argsort(-(q @ es.vectors.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i1, exact)])
    assert recall >= 0.9, f"fp16 re-ranking should find most exact neighbours, recall@10 {recall:.3f}"
    assert streamed.paths == es.paths and streamed.labels == es.labels


def test_flat_index_from_shards_equals_the_in_memory_one(tmp_path):
    import faiss


    x = _clustered(900, 16)
    _write_embeddings(tmp_path / "emb", x, shard_size=256)
    a = build_index(tmp_path / "emb", tmp_path / "a")
    b = build_index(load_embeddings(tmp_path / "emb"), tmp_path / "b")
    assert bytes(faiss.serialize_index(a.index)) == bytes(faiss.serialize_index(b.index))
    assert a.meta["kind"] == "flat" and len(a) == 900


# --------------------------------------------------------------------------- another gallery's index
def test_another_gallerys_index_is_refused_unless_overwrite(tmp_path):
    _write_embeddings(tmp_path / "emb_a", _clustered(300, 16), shard_size=128)
    _write_embeddings(tmp_path / "emb_b", _clustered(200, 16, seed=3), shard_size=128)
    idx = tmp_path / "idx"
    build_index(tmp_path / "emb_a", idx)
    before = sorted(p.name for p in idx.iterdir())
    with pytest.raises(ValueError) as err:
        build_index(tmp_path / "emb_b", idx)
    msg = str(err.value)
    assert "another gallery" in msg and "--overwrite" in msg and str(tmp_path / "emb_a") in msg
    assert sorted(p.name for p in idx.iterdir()) == before, "a refused build must not touch the index"
    assert len(GalleryIndex.load(idx)) == 300
    # this gallery's own index: rebuilt in place (another kind, the same embeddings folder)
    assert build_index(tmp_path / "emb_a", idx, kind="ivfpq").meta["kind"] == "flat"  # too small: fallback
    # the same paths, labels and model given in memory: the same gallery
    build_index(load_embeddings(tmp_path / "emb_a"), idx)
    replaced = build_index(tmp_path / "emb_b", idx, overwrite=True)
    assert len(replaced) == 200 and len(GalleryIndex.load(idx)) == 200
    other_model = load_embeddings(tmp_path / "emb_b")
    other_model = EmbeddingSet(other_model.vectors, other_model.paths, other_model.labels,
                               {**other_model.meta, "fingerprint": "another-model"})
    with pytest.raises(ValueError, match="model another-model"):
        build_index(other_model, idx)


def test_a_folder_that_is_not_an_index_is_refused(tmp_path):
    _write_embeddings(tmp_path / "emb", _clustered(100, 8), shard_size=64)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"my photo")
    with pytest.raises(ValueError, match=r"not empty and not a dva index \(it holds cat.jpg\)"):
        build_index(tmp_path / "emb", photos)
    assert sorted(p.name for p in photos.iterdir()) == ["cat.jpg"]
    with pytest.raises(ValueError, match="not a directory"):
        build_index(tmp_path / "emb", photos / "cat.jpg")
    build_index(tmp_path / "emb", photos, overwrite=True)  # beside the photo, which stays
    assert (photos / "cat.jpg").read_bytes() == b"my photo" and len(GalleryIndex.load(photos)) == 100


def test_cli_index_refuses_another_gallery_without_overwrite(tmp_path, capsys):
    from dva_cli.cli import main

    _write_embeddings(tmp_path / "emb_a", _clustered(120, 8), shard_size=64)
    _write_embeddings(tmp_path / "emb_b", _clustered(60, 8, seed=2), shard_size=64)
    idx = str(tmp_path / "idx")
    assert main(["index", "--embeddings", str(tmp_path / "emb_a"), "--out", idx]) == 0
    assert main(["index", "--embeddings", str(tmp_path / "emb_a"), "--out", idx]) == 0  # its own: rebuilt
    capsys.readouterr()
    assert main(["index", "--embeddings", str(tmp_path / "emb_b"), "--out", idx]) == 2
    err = capsys.readouterr().err
    assert "another gallery" in err and "--overwrite" in err and "Traceback" not in err
    assert len(GalleryIndex.load(idx)) == 120
    assert main(["index", "--embeddings", str(tmp_path / "emb_b"), "--out", idx, "--overwrite"]) == 0
    assert len(GalleryIndex.load(idx)) == 60
    assert json.loads((Path(idx) / "index.json").read_text())["source"]["embeddings"] == str(tmp_path / "emb_b")
