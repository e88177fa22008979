"""WiSE-FT interpolation (dva.checkpoint.interpolate, `dva interpolate`): alpha 0 = frozen weights,
1 = the fine-tuned ones, 0.5 = the midpoint; a fingerprint per alpha; the CLI round trip."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import perturb_trainable, seeded_mnv2_weights

from dva import DVAConfig, build_model
from dva.checkpoint import interpolate, load_checkpoint, read_checkpoint, save_checkpoint
from dva.runtime.torch_embedder import Embedder


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A seeded random MobileNetV2-0.5 as a local weights file (the same frozen model in every build)."""
    return seeded_mnv2_weights(tmp_path_factory.mktemp("w") / "mnv2_050.safetensors")


def _cfg(weights: Path, trainable: str) -> DVAConfig:
    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = "mobilenetv2_050", str(weights), 64
    cfg.train.trainable = trainable
    cfg.ica.rank = 4
    return cfg


def _tuned(weights: Path, trainable: str, path: Path) -> tuple[Path, dict, dict]:
    """A "fine-tuned" checkpoint: its tensors, and the frozen/initial values they started from."""
    model = build_model(_cfg(weights, trainable), 4)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    perturb_trainable(model, seed=2, scale=0.05)
    save_checkpoint(path, model, {"step": 9})
    return path, start, read_checkpoint(path)[0]


def _x() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("trainable", ["full", "head"])
def test_interpolation_ends_and_midpoint(weights, tmp_path, trainable):
    src, start, tuned = _tuned(weights, trainable, tmp_path / "ft.safetensors")
    assert any(not torch.equal(start[n], tuned[n]) for n in tuned if n != "proxies")
    got = {}
    for a in (0.0, 0.5, 1.0):
        info = interpolate(src, a, tmp_path / f"a{a}.safetensors")
        assert info["mode"] == trainable and info["ica_alpha"] is None
        assert info["mixed_tensors"] == len(tuned) - 1  # every trained tensor but the proxies
        got[a], meta = read_checkpoint(tmp_path / f"a{a}.safetensors")
        assert meta["extra"]["interpolation"]["alpha"] == a and meta["extra"]["step"] == 9
    for n, t in tuned.items():
        if n == "proxies":  # training state, kept as trained
            assert all(torch.equal(got[a][n], t) for a in got)
            continue
        assert torch.equal(got[0.0][n], start[n]), n
        assert torch.equal(got[1.0][n], t), n
        torch.testing.assert_close(got[0.5][n], (start[n] + t) / 2, rtol=0, atol=1e-7)

    # alpha 0 embeds like the frozen backbone, alpha 1 like the fine-tune; one fingerprint per alpha
    x = _x()
    frozen = build_model(_cfg(weights, "ica"), 0).eval()
    tuned_model, _ = load_checkpoint(src)
    embs = {a: Embedder(load_checkpoint(tmp_path / f"a{a}.safetensors")[0]) for a in got}
    with torch.no_grad():
        torch.testing.assert_close(embs[0.0].embed_tensor(x), frozen.embed(x, adapted=False), rtol=0, atol=1e-6)
        assert torch.equal(embs[1.0].embed_tensor(x), tuned_model.embed(x))
    assert embs[1.0].fingerprint == Embedder(tuned_model).fingerprint
    assert len({e.fingerprint for e in embs.values()}) == 3


def test_extrapolation_needs_to_be_asked_for(weights, tmp_path):
    src, start, tuned = _tuned(weights, "head", tmp_path / "ft.safetensors")
    with pytest.raises(ValueError, match="--extrapolate"):
        interpolate(src, 1.2, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    interpolate(src, 1.2, tmp_path / "x.safetensors", extrapolate=True)
    got = read_checkpoint(tmp_path / "x.safetensors")[0]
    w = "head.weight"
    torch.testing.assert_close(got[w], start[w] + 1.2 * (tuned[w] - start[w]), rtol=0, atol=1e-6)


def test_adapter_checkpoint_is_interpolated_by_its_scale(weights, tmp_path):
    src, _, tuned = _tuned(weights, "ica", tmp_path / "ica.safetensors")
    info = interpolate(src, 0.5, tmp_path / "half.safetensors")
    assert info["ica_alpha"] == 0.5 and info["mixed_tensors"] == 0
    got, meta = read_checkpoint(tmp_path / "half.safetensors")
    assert meta["config"].ica.alpha == 0.5
    assert all(torch.equal(got[n], t) for n, t in tuned.items())  # the adapters themselves are kept
    same = Embedder(load_checkpoint(src, ica_scale=0.5)[0])
    half = Embedder(load_checkpoint(tmp_path / "half.safetensors")[0])
    assert half.fingerprint == same.fingerprint != Embedder(load_checkpoint(src)[0]).fingerprint
    x = _x()
    assert torch.equal(half.embed_tensor(x), same.embed_tensor(x))
    # interpolating again is relative to the input: half of a half
    assert interpolate(tmp_path / "half.safetensors", 0.5, tmp_path / "q.safetensors")["ica_alpha"] == 0.25


def test_interpolation_refuses_another_backbone(weights, tmp_path):
    src, _, _ = _tuned(weights, "full", tmp_path / "ft.safetensors")
    with pytest.raises(ValueError, match="fingerprint"):
        interpolate(src, 0.5, tmp_path / "x.safetensors", weights="none")
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_interpolate_then_eval_and_embed(weights, synthetic_root, tmp_path, capsys):
    from PIL import Image

    from dva_cli.cli import main

    src, _, _ = _tuned(weights, "full", tmp_path / "ft.safetensors")
    out = tmp_path / "wise.safetensors"
    assert main(["interpolate", "--checkpoint", str(src), "--alpha", "0.5", "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["alpha"] == 0.5 and info["mode"] == "full" and out.is_file()
    assert main(["interpolate", "--checkpoint", str(src), "--alpha", "0.5", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["interpolate", "--checkpoint", str(src), "--alpha", "1.5", "--out", str(tmp_path / "y.st")]) == 2
    assert "--extrapolate" in capsys.readouterr().err

    res = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(out), "--runtime", "torch", "--dataset", "synthetic", "--root",
                 str(synthetic_root), "--no-progress", "--out", str(res)]) == 0
    capsys.readouterr()
    assert json.loads(res.read_text())["embedder_fingerprint"] == info["fingerprint"]

    g = tmp_path / "g"
    g.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(g / f"{i}.png")
    assert main(["embed", "--checkpoint", str(out), "--runtime", "torch", "--images", str(g), "--out",
                 str(tmp_path / "emb"), "--no-progress"]) == 0
    assert info["fingerprint"] in capsys.readouterr().out
    # --ica-scale belongs to adapter checkpoints: a full fine-tune is refused with the way on
    assert main(["embed", "--checkpoint", str(out), "--ica-scale", "0.5", "--runtime", "torch", "--images", str(g),
                 "--out", str(tmp_path / "emb2"), "--no-progress"]) == 2
    assert "dva interpolate" in capsys.readouterr().err


def test_cli_ica_scale_on_eval_and_export(weights, synthetic_root, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from dva_cli.cli import main

    src, _, _ = _tuned(weights, "ica", tmp_path / "ica.safetensors")
    fps = {}
    for a in ("0", "1"):
        res = tmp_path / f"eval{a}.json"
        assert main(["eval", "--checkpoint", str(src), "--ica-scale", a, "--runtime", "torch", "--dataset",
                     "synthetic", "--root", str(synthetic_root), "--no-progress", "--out", str(res)]) == 0
        r = json.loads(res.read_text())
        assert r["ica_scale"] == float(a)
        fps[a] = r["embedder_fingerprint"]
    assert fps["0"] != fps["1"]
    assert main(["export", "--checkpoint", str(src), "--ica-scale", "0.5", "--out", str(tmp_path / "h.onnx")]) == 0
    out = capsys.readouterr().out
    assert "at scale 0.5" in out and float(out.rsplit("min cosine", 1)[1]) >= 0.99999
