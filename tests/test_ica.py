import pytest
import torch

from dva import DVAConfig, build_model, count_parameters
from dva.ica import ConvAdapter, QKVAdapter, ica_disabled, merge_ica, select_stages


def _cfg(name: str, **ica) -> DVAConfig:
    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights = name, "none"
    for k, v in ica.items():
        setattr(cfg.ica, k, v)
    return cfg


def _perturb(model) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.adapter_parameters():
            p.add_(torch.randn_like(p) * 0.05)


def test_vit_b16_rank16_qk_parameter_count():
    model = build_model(_cfg("vit_base_patch16_224", rank=16, target="qk", blocks="all"))
    c = count_parameters(model)
    # 12 blocks x 2 projections (Q, K) x (768*16 down + 16*768 up)
    assert c["adapter_params"] == 589_824 == 12 * 2 * 2 * 768 * 16
    assert c["backbone_params"] == 85_798_656
    assert c["trainable_fraction"] == pytest.approx(0.0068745, rel=1e-4)  # the paper's ~0.68%
    assert sum(isinstance(m, QKVAdapter) for m in model.modules()) == 12


@pytest.mark.parametrize("name,kw", [
    ("vit_tiny_patch16_224", {"target": "qk"}),
    ("mobilenetv2_100", {"target": "pw+pwl+head", "blocks": "-2:"}),
    ("resnet50", {"target": "pw+pwl", "blocks": "-1:"}),
])
def test_zero_init_equals_frozen(name, kw):
    model = build_model(_cfg(name, img_size=64 if "vit" not in name else 224, **kw))
    if name.startswith("resnet"):  # random timm ResNets zero the last BN of each block
        for m in model.encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.data.fill_(1.0)
    x = torch.randn(2, 3, 224 if "vit" in name else 64, 224 if "vit" in name else 64)
    with torch.no_grad():
        adapted, frozen = model.embed(x), model.embed(x, adapted=False)
    assert torch.equal(adapted, frozen)
    _perturb(model)
    with torch.no_grad():
        assert not torch.allclose(model.embed(x), frozen, atol=1e-4)  # the adapters do act


@pytest.mark.parametrize("name,kw,size", [
    ("vit_tiny_patch16_224", {"target": "qk"}, 224),
    ("mobilenetv2_100", {"target": "pw+pwl+head", "blocks": "-3:"}, 64),
])
def test_merged_identity_adapters_match(name, kw, size):
    model = build_model(_cfg(name, act="identity", scale=0.5, **kw))
    _perturb(model)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        before = model.embed(x)
    n = merge_ica(model.encoder)
    assert n == len(model.adapted)
    assert not any(isinstance(m, (QKVAdapter, ConvAdapter)) for m in model.modules())
    with torch.no_grad():
        after = model.embed(x)
    torch.testing.assert_close(after, before, atol=2e-5, rtol=1e-4)


def test_merge_refuses_nonlinear():
    model = build_model(_cfg("vit_tiny_patch16_224", act="gelu"))
    with pytest.raises(ValueError, match="identity"):
        merge_ica(model.encoder)


def test_ica_disabled_restores_state():
    model = build_model(_cfg("mobilenetv2_100", target="pwl", blocks="-1:"))
    _perturb(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = model.embed(x)
        with ica_disabled(model.encoder):
            b = model.embed(x)
        c = model.embed(x)
    assert torch.equal(a, c) and not torch.equal(a, b)


def test_only_adapters_and_proxies_trainable():
    model = build_model(_cfg("mobilenetv2_100", target="pw", blocks="-2:"), num_classes=5)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "proxies" in names
    assert all(n == "proxies" or ".ica_" in n for n in names)
    assert len(names) == 1 + 2 * len(model.adapted)


def test_select_stages():
    assert select_stages(7, "all") == list(range(7))
    assert select_stages(7, "-2:") == [5, 6]
    assert select_stages(12, "0,3,-1") == [0, 3, 11]
    with pytest.raises(ValueError, match="out of range"):
        select_stages(4, "9")
    with pytest.raises(ValueError, match="ica.blocks"):
        select_stages(4, "last")


def test_bad_target_is_a_clear_error():
    with pytest.raises(ValueError, match="not valid for a CNN"):
        build_model(_cfg("mobilenetv2_100", target="qk"))
    with pytest.raises(ValueError, match="not valid for a ViT"):
        build_model(_cfg("vit_tiny_patch16_224", target="pw"))


def test_auto_target_on_a_cnn_without_head_conv():
    model = build_model(_cfg("resnet50", target="auto", blocks="-1:", rank=4))  # ResNets have no conv_head
    assert model.adapted and not any("head" in n for n in model.adapted)
    with pytest.raises(ValueError, match="conv_head"):
        build_model(_cfg("resnet50", target="pw+head", blocks="-1:"))
