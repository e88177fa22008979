"""`dva dedup`: planted duplicates reported exactly (pairs, groups; CSV and JSON), refusals first."""
from __future__ import annotations

import csv
import importlib.util
import io
import json

import numpy as np
import pytest

from dva.retrieval.index import build_index
from dva.retrieval.store import EmbeddingSet
from dva_cli.cli import main


@pytest.fixture
def planted(tmp_path):
    """200 random unit vectors (dim 32) with 0 = 7 = 9 (exact copies) and 4 ~ 5 (cosine 0.97), indexed."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 32))
    x[7] = x[9] = x[0]
    x[5] = x[4] + 0.25 * np.linalg.norm(x[4]) / np.sqrt(32) * rng.normal(size=32)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    es = EmbeddingSet(x, [f"/g/img_{i}.jpg" for i in range(200)], [None] * 200,
                      {"fingerprint": "synthetic", "dtype": "float32"})
    build_index(es, tmp_path / "idx")
    s = x.astype(np.float64) @ x.astype(np.float64).T
    want = {(int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(s >= 0.95, k=1)))}
    assert want == {(0, 7), (0, 9), (7, 9), (4, 5)}, "the planted pairs and nothing else"
    return tmp_path / "idx", es


def test_pairs_csv_json_and_groups(planted, tmp_path, capsys):
    idx, _ = planted
    out = tmp_path / "dups.csv"
    assert main(["dedup", "--index", str(idx), "--threshold", "0.95", "--out", str(out)]) == 0
    assert "4 pairs with cosine >= 0.95 among 200 images; 2 groups holding 5 images" in capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {(int(r["id_a"]), int(r["id_b"])) for r in rows} == {(0, 7), (0, 9), (7, 9), (4, 5)}
    assert float(rows[0]["score"]) == pytest.approx(1.0, abs=1e-6) and float(rows[-1]["score"]) < 0.99
    assert next(r for r in rows if r["id_a"] == "4")["path_b"] == "/g/img_5.jpg"

    groups = tmp_path / "groups.csv"
    assert main(["dedup", "--index", str(idx), "--out", str(groups), "--groups"]) == 0
    members = list(csv.DictReader(io.StringIO(groups.read_text())))
    assert [(r["group"], r["id"], r["path"]) for r in members] == [
        ("0", "0", "/g/img_0.jpg"), ("0", "7", "/g/img_7.jpg"), ("0", "9", "/g/img_9.jpg"),
        ("1", "4", "/g/img_4.jpg"), ("1", "5", "/g/img_5.jpg")]

    js = tmp_path / "dups.json"
    assert main(["dedup", "--index", str(idx), "--threshold", "0.99", "--out", str(js), "--groups"]) == 0
    doc = json.loads(js.read_text())
    assert doc["threshold"] == 0.99 and doc["count"] == 200 and doc["approximate"] is False
    assert [(p["id_a"], p["id_b"]) for p in doc["pairs"]] == [(0, 7), (0, 9), (7, 9)]  # 4 ~ 5 is below 0.99
    assert doc["groups"] == [[0, 7, 9]]


def test_summary_without_out(planted, capsys):
    idx, _ = planted
    assert main(["dedup", "--index", str(idx), "--threshold", "0.95"]) == 0
    text = capsys.readouterr().out
    assert "4 pairs" in text and "0 /g/img_0.jpg  ~  7 /g/img_7.jpg" in text


def test_refusals_come_before_any_work(planted, tmp_path, capsys):
    idx, _ = planted
    out = tmp_path / "dups.csv"
    out.write_text("keep me")
    assert main(["dedup", "--index", str(idx), "--out", str(out)]) == 2
    assert f"--out {out} exists: pass --overwrite" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(["dedup", "--index", str(idx), "--out", str(out), "--overwrite"]) == 0
    assert out.read_text().startswith("id_a,id_b,score")
    assert main(["dedup", "--index", str(idx), "--out", str(tmp_path / "d.txt")]) == 2
    assert "name a .csv or .json file" in capsys.readouterr().err
    assert main(["dedup", "--index", str(idx), "--threshold", "1.5"]) == 2
    assert "threshold is a cosine in (0, 1]" in capsys.readouterr().err
    assert main(["dedup", "--store", "milvus", "--index", str(idx)]) == 2
    assert "--uri" in capsys.readouterr().err
    assert main(["dedup"]) == 2 and "--index INDEX" in capsys.readouterr().err


def test_pq_codes_only_are_said_to_be_approximate(planted, tmp_path, capsys):
    _, es = planted
    more = np.random.default_rng(2).normal(size=(600, 32))  # IVF-PQ trains on 640 vectors here
    x = np.concatenate([es.vectors, (more / np.linalg.norm(more, axis=1, keepdims=True)).astype(np.float32)])
    big = EmbeddingSet(x, [f"/g/img_{i}.jpg" for i in range(800)], [None] * 800, dict(es.meta))
    pq = build_index(big, tmp_path / "pq", kind="ivfpq", nlist=4, m=8, nbits=4, nprobe=4, refine="none",
                     fallback=False)
    assert pq.meta["kind"] == "ivfpq"
    out = tmp_path / "pq.csv"
    assert main(["dedup", "--index", str(tmp_path / "pq"), "--threshold", "0.97", "--out", str(out)]) == 0
    assert "approximate" in capsys.readouterr().err
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# ") and "approximate" in lines[0] and lines[1] == "id_a,id_b,score,path_a,path_b"
    found = {(int(r[0]), int(r[1])) for r in csv.reader(lines[2:])}
    assert {(0, 7), (0, 9), (7, 9)} <= found  # copies share their codes


@pytest.mark.skipif(importlib.util.find_spec("milvus_lite") is None, reason="milvus-lite absent")
def test_milvus_store(planted, tmp_path):
    from dva.retrieval.milvus import build_milvus

    _, es = planted
    db = tmp_path / "g.db"
    build_milvus(es, str(db))
    out = tmp_path / "m.json"
    assert main(["dedup", "--store", "milvus", "--uri", str(db), "--out", str(out), "--groups"]) == 0
    doc = json.loads(out.read_text())
    assert {(p["id_a"], p["id_b"]) for p in doc["pairs"]} == {(0, 7), (0, 9), (7, 9), (4, 5)}
    assert doc["groups"] == [[0, 7, 9], [4, 5]] and doc["approximate"] is False


@pytest.mark.skipif(importlib.util.find_spec("milvus_lite") is None, reason="milvus-lite absent")
def test_milvus_database_of_several_models(planted, tmp_path, capsys, monkeypatch):
    from types import SimpleNamespace

    from dva.retrieval.milvus import build_milvus
    from dva_cli import _model

    _, es = planted
    db = tmp_path / "two.db"
    build_milvus(es, str(db)).client.close()
    y = np.random.default_rng(3).normal(size=(50, 32))
    other = EmbeddingSet((y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32),
                         [f"/h/{i}.jpg" for i in range(50)], [None] * 50, {"fingerprint": "other", "dtype": "float32"})
    build_milvus(other, str(db)).client.close()  # a second model's collection in the same database
    base = ["dedup", "--store", "milvus", "--uri", str(db), "--threshold", "0.95"]
    assert main(base) == 2 and "several models" in capsys.readouterr().err
    out = tmp_path / "m.json"
    assert main([*base, "--fingerprint", "synthetic", "--out", str(out)]) == 0
    assert "4 pairs with cosine >= 0.95 among 200 images" in capsys.readouterr().out
    assert {(p["id_a"], p["id_b"]) for p in json.loads(out.read_text())["pairs"]} == {(0, 7), (0, 9), (7, 9), (4, 5)}
    assert main([*base, "--fingerprint", "other"]) == 0
    assert "0 pairs with cosine >= 0.95 among 50 images" in capsys.readouterr().out
    seen = []
    monkeypatch.setattr(_model, "embedder_from_args",
                        lambda args: seen.append(args.checkpoint) or SimpleNamespace(fingerprint="other"))
    assert main([*base, "--checkpoint", "run/last.safetensors"]) == 0  # the checkpoint's model's gallery
    assert seen == ["run/last.safetensors"] and "among 50 images" in capsys.readouterr().out
    assert main([*base, "--checkpoint", "run/last.safetensors", "--fingerprint", "other"]) == 2
    assert "not both" in capsys.readouterr().err and len(seen) == 1
    assert main([*base, "--fingerprint", "nope"]) == 2 and "no gallery of model nope" in capsys.readouterr().err


def test_a_fingerprint_is_checked_against_an_index(planted, capsys):
    idx, _ = planted
    assert main(["dedup", "--index", str(idx), "--fingerprint", "synthetic"]) == 0
    assert "4 pairs" in capsys.readouterr().out
    assert main(["dedup", "--index", str(idx), "--fingerprint", "another"]) == 2
    assert "fingerprint synthetic" in capsys.readouterr().err
