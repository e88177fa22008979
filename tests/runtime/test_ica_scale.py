"""The embedding-time adapter scale alpha (``ica.alpha``, ``--ica-scale``): 0 = frozen, 1 = trained,
in the fingerprint, and exported to ONNX exactly (merged identity adapters and GELU branches)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import perturb_trainable, seeded_mnv2_weights

from dva import DVAConfig, build_model
from dva.checkpoint import load_checkpoint, save_checkpoint
from dva.ica import Bottleneck, ica_scale, set_ica_scale
from dva.runtime.torch_embedder import Embedder

COSINE = 0.99999


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A seeded random MobileNetV2-0.5 as a local weights file (the same frozen model in every build)."""
    return seeded_mnv2_weights(tmp_path_factory.mktemp("w") / "mnv2_050.safetensors")


def _model(weights: Path, act: str = "gelu", seed: int = 1):
    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = "mobilenetv2_050", str(weights), 64
    cfg.ica.act, cfg.ica.rank = act, 4
    return perturb_trainable(build_model(cfg, 3), seed=seed, scale=0.3).eval()


def _vit(seed: int = 1):
    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = "vit_tiny_patch16_224", "none", 32
    cfg.ica.rank = 4
    torch.manual_seed(0)
    return perturb_trainable(build_model(cfg, 0), seed=seed, scale=0.3).eval()


def _x(n: int = 3, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", ["cnn", "vit"])
def test_alpha_zero_is_the_frozen_model_exactly_and_one_the_trained(weights, family):
    model = _model(weights) if family == "cnn" else _vit()
    x = _x(size=64 if family == "cnn" else 32)
    with torch.no_grad():
        trained, frozen = model.embed(x), model.embed(x, adapted=False)
        assert (trained * frozen).sum(1).max() < 0.9999  # the adapters do change the embedding
        model.set_ica_scale(0.0)
        assert torch.equal(model.embed(x), frozen)
        model.set_ica_scale(0.5)
        half = model.embed(x)
        assert not torch.equal(half, frozen) and not torch.equal(half, trained)
        model.set_ica_scale(1.0)
        assert torch.equal(model.embed(x), trained)
    assert model.cfg.ica.alpha == 1.0 and ica_scale(model.encoder) == 1.0


def test_bottleneck_output_and_merged_delta_scale_linearly():
    b = Bottleneck(8, 6, 2, "gelu", 0.7, True)
    torch.nn.init.normal_(b.up.weight)
    x = torch.randn(4, 8)
    full, w = b(x).detach(), b.delta_weight().detach()
    b.alpha = 0.25
    assert torch.equal(b(x).detach(), 0.25 * full)  # 0.25 is a power of two: exact
    assert torch.equal(b.delta_weight().detach(), 0.25 * w)


def test_set_ica_scale_refuses_what_it_cannot_scale(weights):
    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = "mobilenetv2_050", str(weights), 64
    cfg.train.trainable = "head"
    with pytest.raises(ValueError, match="dva interpolate"):
        build_model(cfg, 0).set_ica_scale(0.5)
    with pytest.raises(ValueError, match="finite"):
        set_ica_scale(_model(weights).encoder, float("nan"))


def test_checkpoint_loader_applies_the_scale_and_the_fingerprint_records_it(weights, tmp_path):
    model = _model(weights)
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, model)
    x = _x()
    fps = {}
    for a in (None, 0.0, 0.5, 1.0):
        loaded, _ = load_checkpoint(path, ica_scale=a)
        emb = Embedder(loaded)
        fps[a] = emb.fingerprint
        with torch.no_grad():
            if a == 0.0:
                assert torch.equal(emb.embed_tensor(x), model.embed(x, adapted=False))
            if a in (None, 1.0):
                assert torch.equal(emb.embed_tensor(x), model.embed(x))
    # scale 1 is the checkpoint as trained: same fingerprint as before scales existed
    assert fps[None] == fps[1.0] == Embedder(model).fingerprint
    assert len({fps[0.0], fps[0.5], fps[1.0]}) == 3
    with pytest.raises(ValueError, match="outside"):
        load_checkpoint(path, ica_scale=1.2)


def test_load_embedder_scale_needs_an_adapter_checkpoint(weights, tmp_path):
    from dva.runtime.load import load_embedder

    with pytest.raises(ValueError, match="--checkpoint"):
        load_embedder(backbone="mobilenetv2_050", weights=str(weights), ica_scale=0.5)
    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = "mobilenetv2_050", str(weights), 64
    cfg.train.trainable = "full"
    save_checkpoint(tmp_path / "full.safetensors", build_model(cfg, 0))
    with pytest.raises(ValueError, match="dva interpolate"):
        load_embedder(checkpoint=str(tmp_path / "full.safetensors"), ica_scale=0.5)
    emb = load_embedder(checkpoint=str(_saved(weights, tmp_path)), ica_scale=0.5)
    assert emb.model.cfg.ica.alpha == 0.5 and ica_scale(emb.model.encoder) == 0.5


def _saved(weights: Path, tmp_path: Path, act: str = "gelu") -> Path:
    path = tmp_path / f"{act}.safetensors"
    save_checkpoint(path, _model(weights, act))
    return path


def test_an_index_built_at_one_scale_refuses_queries_at_another(weights, tmp_path):
    from dva.retrieval.index import build_index
    from dva.retrieval.index.gallery_index import FingerprintMismatchError
    from dva.retrieval.store.embed import embed_gallery
    from dva.retrieval.store.gallery import list_images
    from dva.runtime.load import load_embedder
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "g").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "g" / f"{i}.png")
    ck = str(_saved(weights, tmp_path))
    half = load_embedder(checkpoint=ck, ica_scale=0.5)
    embed_gallery(half, list_images(str(tmp_path / "g")), tmp_path / "emb", progress=False)
    index = build_index(tmp_path / "emb", tmp_path / "idx")
    index.check_fingerprint(load_embedder(checkpoint=ck, ica_scale=0.5).fingerprint)  # the same scale: accepted
    for other in (load_embedder(checkpoint=ck), load_embedder(checkpoint=ck, ica_scale=0.0)):
        with pytest.raises(FingerprintMismatchError):
            index.check_fingerprint(other.fingerprint)


@pytest.mark.parametrize("act", ["identity", "gelu"])
def test_onnx_export_equals_torch_at_half_scale(weights, tmp_path, act):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import json

    from dva.runtime.load import load_embedder
    from dva.runtime.onnx_embedder import OnnxEmbedder
    from dva.runtime.onnx_export import export_onnx

    ck = str(_saved(weights, tmp_path, act))
    half, full = load_embedder(checkpoint=ck, ica_scale=0.5), load_embedder(checkpoint=ck)
    meta = export_onnx(half, tmp_path / "half.onnx")
    info = json.loads(meta["dva.model"])
    assert info["ica_scale"] == 0.5
    assert (info["merged_adapters"] > 0) == (act == "identity")  # identity adapters are folded into the weights
    onnx = OnnxEmbedder(tmp_path / "half.onnx")
    assert onnx.fingerprint == half.fingerprint != full.fingerprint
    x = _x(6)
    a, b, c = half.embed_tensor(x), onnx.embed_tensor(x), full.embed_tensor(x)
    assert float((a * b).sum(1).min()) >= COSINE
    assert float((b * c).sum(1).min()) < 0.9999  # the graph holds the scale: not the alpha-1 model


def test_load_embedder_weights_override_a_checkpoint_only_when_given(weights, tmp_path):
    from dva.runtime.load import load_embedder

    ck = str(_saved(weights, tmp_path))
    own = load_embedder(checkpoint=ck)  # None: the weights it was trained with
    assert own.model.cfg.backbone.weights == str(weights)
    assert load_embedder(checkpoint=ck, weights=str(weights)).fingerprint == own.fingerprint
    # An explicit source is used, not silently dropped: no bundled MobileNetV2-0.5 exists.
    with pytest.raises((ValueError, FileNotFoundError, RuntimeError)) as e:
        load_embedder(checkpoint=ck, weights="bundled")
    assert "bundled" in str(e.value)
