"""embed -> index -> search on a generated gallery, through the library and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dva.retrieval.index import GalleryIndex, build_index
from dva.retrieval.search import search_paths
from dva.retrieval.store import GalleryItem, embed_gallery, list_images, load_embeddings


def _embed_and_index(embedder, paths, labels, tmp_path, **kw):
    items = [GalleryItem(str(p), lab) for p, lab in zip(paths, labels)]
    embed_gallery(embedder, items, tmp_path / "emb", progress=False, shard_size=10, batch_size=4, **kw)
    return build_index(tmp_path / "emb", tmp_path / "idx")


def test_self_retrieval_sorted_scores_and_exact_equals_bruteforce(embedder, gallery, tmp_path):
    paths, labels = gallery
    built = _embed_and_index(embedder, paths, labels, tmp_path)
    index = GalleryIndex.load(tmp_path / "idx")  # what a later process sees
    assert len(index) == len(paths) == len(built)
    assert index.meta["kind"] == "flat" and index.fingerprint == embedder.fingerprint

    results = search_paths(index, embedder, paths, k=5)
    for p, lab, res in zip(paths, labels, results):
        assert res.hits[0].path == str(p), "a gallery image must find itself first"
        assert res.hits[0].label == lab
        assert res.hits[0].score == pytest.approx(1.0, abs=1e-5)
        scores = [h.score for h in res.hits]
        assert scores == sorted(scores, reverse=True)
        assert [h.rank for h in res.hits] == [1, 2, 3, 4, 5]

    # FAISS flat == torch brute force top-k on the stored vectors.
    es = load_embeddings(tmp_path / "emb")
    q = torch.from_numpy(embedder.embed_pil([Image.open(p) for p in paths[:6]]))
    sims = q @ torch.from_numpy(es.vectors).T
    t_scores, t_ids = sims.topk(7, dim=1)
    f_scores, f_ids = index.search(q.numpy(), 7)
    np.testing.assert_array_equal(f_ids, t_ids.numpy())
    np.testing.assert_allclose(f_scores, t_scores.numpy(), atol=1e-5)
    # rows are L2-normalised and in input order
    np.testing.assert_allclose(np.linalg.norm(es.vectors, axis=1), 1.0, atol=1e-5)
    assert es.paths == [str(p) for p in paths] and es.labels == labels


def test_meta_records_model_and_layout(embedder, gallery, tmp_path):
    paths, labels = gallery
    _embed_and_index(embedder, paths, labels, tmp_path, dtype="float16")
    meta = json.loads((tmp_path / "emb" / "meta.json").read_text())
    assert meta["fingerprint"] == embedder.fingerprint
    assert (meta["dim"], meta["dtype"], meta["count"], meta["status"]) == (embedder.dim, "float16", 24, "complete")
    assert meta["normalized"] == "l2" and meta["num_shards"] == 3
    assert np.load(tmp_path / "emb" / "shards" / "00000.npy").dtype == np.float16
    items = [json.loads(x) for x in (tmp_path / "emb" / "items.jsonl").read_text().splitlines()]
    assert [it["id"] for it in items] == list(range(24))
    assert not list((tmp_path / "emb").rglob("*.tmp")), "no temp files may remain"
    # float16 storage still finds every image itself first
    index = GalleryIndex.load(tmp_path / "idx")
    assert all(r.hits[0].path == str(p) for p, r in zip(paths, search_paths(index, embedder, paths, k=3)))


def test_list_file_csv_with_labels_and_relative_paths(tmp_path, gallery):
    paths, labels = gallery
    lst = tmp_path / "gallery" / "list.csv"
    lines = ["path,label"] + [f"{p.relative_to(lst.parent)},{lab}" for p, lab in zip(paths, labels)]
    lst.write_text("\n".join(lines) + "\n")
    items = list_images(lst)
    assert [it.path for it in items] == [str(p.resolve()) for p in paths]
    assert [it.label for it in items] == [str(lab) for lab in labels]
    txt = tmp_path / "list.txt"
    txt.write_text("\n".join(str(p) for p in paths[:3]) + "\n\n")
    assert [it.label for it in list_images(txt)] == [None] * 3
    by_dir = list_images(tmp_path / "gallery", label_from_parent=True)
    assert len(by_dir) == 24 and {it.label for it in by_dir} == {"class_0", "class_1", "class_2"}
    with pytest.raises(FileNotFoundError, match="no such directory"):
        list_images(tmp_path / "nope")


def test_cli_embed_index_search(embedder, gallery, tmp_path, monkeypatch, capsys):
    from dva_cli import cli
    from dva_cli import _model as embed_cmd

    monkeypatch.setattr(embed_cmd, "embedder_from_args", lambda args: embedder)
    paths, _ = gallery
    emb, idx = tmp_path / "emb", tmp_path / "idx"
    assert cli.main(["embed", "--images", str(tmp_path / "gallery"), "--labels-from-dirs",
                     "--out", str(emb), "--shard-size", "7", "--batch-size", "5", "--no-progress"]) == 0
    assert "embedded 24 of 24" in capsys.readouterr().out
    assert cli.main(["index", "--embeddings", str(emb), "--out", str(idx)]) == 0
    # too small for IVF-PQ: refused with --no-fallback, flat with a note otherwise
    assert cli.main(["index", "--embeddings", str(emb), "--out", str(tmp_path / "pq"),
                     "--kind", "ivfpq", "--no-fallback"]) == 2
    assert "too few" in capsys.readouterr().err
    assert cli.main(["index", "--embeddings", str(emb), "--out", str(tmp_path / "pq"), "--kind", "ivfpq"]) == 0
    assert "built flat instead" in capsys.readouterr().out
    q = str(paths[4].resolve())
    assert cli.main(["search", "--index", str(idx), "--k", "3", "--json", q]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["hits"][0]["path"] == q and out[0]["hits"][0]["label"] == "class_1"
    assert len(out[0]["hits"]) == 3
    assert cli.main(["search", "--index", str(idx), q]) == 0
    assert q in capsys.readouterr().out


def test_thread_prefetch_and_worker_process_give_the_same_rows(embedder, gallery, tmp_path):
    """num_workers=0 (decode in a thread of this process) equals a DataLoader worker, bad images included."""
    paths, labels = gallery
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    items = [GalleryItem(str(p), lab) for p, lab in zip(paths, labels)] + [GalleryItem(str(bad), 0)]
    out = {}
    for w in (0, 1):
        s = embed_gallery(embedder, items, tmp_path / f"emb{w}", progress=False, shard_size=7, batch_size=3,
                          num_workers=w)
        assert s.count == len(paths) and [r["path"] for r in s.skipped] == [str(bad)]
        out[w] = load_embeddings(tmp_path / f"emb{w}")
    np.testing.assert_array_equal(out[0].vectors, out[1].vectors)
    assert out[0].paths == out[1].paths and str(bad) not in out[0].paths
