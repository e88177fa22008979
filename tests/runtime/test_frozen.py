"""dva.runtime.frozen: the onnxruntime runner of the frozen prefix and response map equals torch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dva import DVAConfig, build_model
from dva.runtime.cache import frozen_cache_path
from dva.runtime.frozen import FrozenRunner, OnnxFrozenRunner, frozen_runner

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.mktemp("dva_cache")
    mp.setenv("DVA_CACHE", str(d))
    yield d
    mp.undo()


def _model(name: str = "mobilenetv2_100", size: int = 96, **ica):
    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = name, "none", size
    for k, v in ica.items():
        setattr(cfg.ica, k, v)
    torch.manual_seed(0)
    model = build_model(cfg, 4).eval()
    with torch.no_grad():  # adapters away from zero: a map that ignored "adapters disabled" would differ
        for m in model.adapter_parameters():
            m.add_(torch.randn_like(m) * 0.3)
    return model


def _photos(tmp_path, n: int = 5) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        a = np.full((80 + 8 * i, 100, 3), 30, np.uint8)
        a[20:60, 30 + 5 * i:80] = rng.integers(120, 255, (40, 50 - 5 * i, 3))
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(a).save(paths[-1])
    return paths


@pytest.mark.parametrize("name,ica", [("mobilenetv2_100", {}),
                                      ("vit_tiny_patch16_224", {"target": "qk", "blocks": "-2:"})])
def test_onnx_runner_equals_torch(cache, name, ica):
    size = 96 if name.startswith("mobilenet") else 224
    model = _model(name, size, **ica)
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    ref, fast = FrozenRunner(model), OnnxFrozenRunner(model)
    h_ref, h_fast = ref.prefix(x), fast.prefix(x)
    assert h_fast.shape == h_ref.shape and h_ref.shape[0] == 3
    assert torch.allclose(h_fast, h_ref, rtol=1e-4, atol=1e-4 * float(h_ref.abs().max()))
    m_ref, m_fast = ref.activation_map(x), fast.activation_map(x)
    assert m_fast.shape == m_ref.shape
    assert float((m_fast - m_ref).abs().max()) < 1e-4
    # the map is the frozen network's: with adapters on it differs
    adapted = model.activation_map(x, adapted=True)
    assert float((adapted - m_ref).abs().max()) > 1e-3
    # exported once per (weights, prefix end, job, size): the second runner reuses the files
    p = frozen_cache_path(model, "prefix", size)
    mtime = p.stat().st_mtime_ns
    OnnxFrozenRunner(model).prefix(x[:1])
    assert p.stat().st_mtime_ns == mtime
    assert frozen_cache_path(model, "prefix", size + 32) != p


def test_self_boxes_and_prefix_cache_same_with_either_runner(cache, tmp_path):
    from dva.opa.sources import compute_boxes
    from dva.transforms import eval_transform, view_transform
    from dva_train.prefix_cache import build_prefix_cache
    from dva_train.views import ViewDataset

    model = _model()
    cfg = model.cfg
    paths = _photos(tmp_path)
    b_ref = compute_boxes(model, paths, cfg, tmp_path / "a.json", progress=False, runner=FrozenRunner(model))
    b_fast = compute_boxes(model, paths, cfg, tmp_path / "b.json", progress=False, runner=OnnxFrozenRunner(model))
    for p in paths:
        assert np.allclose(b_ref[p][0], b_fast[p][0], atol=1.0) and abs(b_ref[p][1] - b_fast[p][1]) < 1e-3
    ds = ViewDataset(paths, [0, 0, 1, 1, 2], b_ref, cfg.opa, (0, 0, 0), eval_transform(96, model.data_cfg),
                     view_transform(96, model.data_cfg), 1)
    c_ref = build_prefix_cache(FrozenRunner(model), ds, ("x", "disc"), 2, torch.device("cpu"), progress=False)
    c_fast = build_prefix_cache(OnnxFrozenRunner(model), ds, ("x", "disc"), 2, torch.device("cpu"), progress=False)
    for v in ("x", "disc"):
        a, b = c_ref.tensors[v].float(), c_fast.tensors[v].float()
        assert a.shape == b.shape and torch.allclose(a, b, rtol=2e-3, atol=2e-3 * float(a.abs().max()))
    assert torch.equal(c_ref.keep, c_fast.keep) and torch.equal(c_ref.labels, c_fast.labels)


def test_frozen_runner_choice():
    model = _model()
    assert frozen_runner(model, "cpu", "auto").runtime == "onnx"
    assert frozen_runner(model, "cpu", "torch").runtime == "torch"
    assert frozen_runner(model, "meta", "auto").runtime == "torch"  # not the CPU: torch serves it
    with pytest.raises(ValueError, match="needs the CPU"):
        frozen_runner(model, "meta", "onnx")
    with pytest.raises(ValueError, match="runtime must be one of auto, torch, onnx"):
        frozen_runner(model, "cpu", "tensorrt")


def test_frozen_runner_without_onnxruntime(monkeypatch):
    """The one ``sessions.onnx_available`` decides: without onnxruntime, auto is torch and onnx is refused."""
    from dva.runtime import sessions

    model = _model()
    monkeypatch.setattr(sessions, "onnx_available", lambda: False)
    assert frozen_runner(model, "cpu", "auto").runtime == "torch"
    with pytest.raises(ValueError, match="needs the CPU and the onnx and onnxruntime packages"):
        frozen_runner(model, "cpu", "onnx")


def test_auto_falls_back_to_torch_when_the_export_fails(cache, monkeypatch):
    from dva.runtime import frozen

    model = _model()
    x = torch.randn(2, 3, 96, 96)

    def broken(*a, **k):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(frozen, "export_frozen", broken)
    with pytest.warns(UserWarning, match="could not run on onnxruntime.*unsupported operator"):
        h = frozen_runner(model, "cpu", "auto").prefix(x)
    assert torch.equal(h, FrozenRunner(model).prefix(x))
    with pytest.raises(RuntimeError, match="unsupported operator"):  # asked for onnx: no silent fallback
        frozen_runner(model, "cpu", "onnx").prefix(x)


def test_frozen_embedding_equals_torch_and_is_keyed_by_trained_backbone_weights(cache):
    model = _model()
    x = torch.randn(4, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    ref, fast = FrozenRunner(model).embed(x), OnnxFrozenRunner(model).embed(x)
    assert ref.shape == (4, model.dim) and torch.allclose(ref.norm(dim=-1), torch.ones(4))
    assert float((ref * fast).sum(-1).min()) > 0.99999
    assert float((ref - model.embed(x, adapted=True).detach()).abs().max()) > 1e-4  # the adapters are off in it
    # adapters and head do not enter the frozen graph: one export for any adapter values ...
    p = frozen_cache_path(model, "embed", 96)
    with torch.no_grad():
        model.adapter_parameters()[0].add_(1.0)
    assert frozen_cache_path(model, "embed", 96) == p
    # ... but a fully fine-tuned backbone does
    cfg = model.cfg
    cfg.train.trainable = "full"
    full = build_model(cfg, 4).eval()
    before = frozen_cache_path(full, "embed", 96)
    with torch.no_grad():
        next(full.encoder.parameters()).add_(0.01)
    assert frozen_cache_path(full, "embed", 96) != before


@pytest.mark.parametrize("runner_cls", [FrozenRunner, OnnxFrozenRunner])
@pytest.mark.parametrize("name,ica", [("mobilenetv2_100", {}),
                                      ("vit_tiny_patch16_224", {"target": "qk", "blocks": "-2:"})])
def test_one_pass_gives_the_boxes_and_prefixes_of_two(cache, tmp_path, runner_cls, name, ica):
    """opa.loc_view=view: boxes + x-view prefixes from one pass equal the two separate passes."""
    from dva.opa.sources import compute_boxes
    from dva.transforms import eval_transform, view_transform
    from dva_train.prefix_cache import build_prefix_cache
    from dva_train.views import ViewDataset

    size = 96 if name.startswith("mobilenet") else 224
    model = _model(name, size, **ica)
    cfg = model.cfg
    cfg.opa.loc_view = "view"
    paths = _photos(tmp_path)
    runner = runner_cls(model)
    sink: list = []
    shared = compute_boxes(model, paths, cfg, tmp_path / "shared.json", progress=False, runner=runner,
                           prefix_sink=sink)
    alone = compute_boxes(model, paths, cfg, tmp_path / "alone.json", progress=False, runner=runner)
    assert shared == alone  # the boxes: the same map either way
    x_prefix = torch.cat(sink)
    ds = ViewDataset(paths, [0, 0, 1, 1, 2], alone, cfg.opa, (0, 0, 0), eval_transform(size, model.data_cfg),
                     view_transform(size, model.data_cfg), 1)
    two = build_prefix_cache(runner, ds, ("x", "disc", "bg"), 2, torch.device("cpu"), progress=False)
    one = build_prefix_cache(runner, ds, ("x", "disc", "bg"), 2, torch.device("cpu"), progress=False,
                             given={"x": x_prefix[:, None]})
    for v in ("x", "disc", "bg"):
        a, b = two.tensors[v].float(), one.tensors[v].float()
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(a.abs().max())), v
    assert torch.equal(two.keep, one.keep) and torch.equal(two.labels, one.labels)
    # a cached result is read back, not recomputed: nothing more goes to the sink
    again: list = []
    assert compute_boxes(model, paths, cfg, tmp_path / "shared.json", progress=False, runner=runner,
                         prefix_sink=again) == shared and again == []


def test_view_boxes_map_back_to_the_image():
    """A map found on the centre crop gives a box of the whole image, extended where it meets the crop's edge."""
    from dva.opa.geometry import box_from_view_map, view_geometry
    from dva.transforms import eval_transform

    tf = eval_transform(224, {"mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.875})  # resize 256, crop 224
    sx, sy, left, top, c = view_geometry(tf, 400, 300)
    assert (c, left, top) == (224, round((341 - 224) / 2), 16) and sx == pytest.approx(341 / 400)
    inner = np.zeros((7, 7), np.float32)
    inner[2:5, 2:5] = 1.0  # the middle of the crop
    (x, y, w, h), score = box_from_view_map(inner, tf, 400, 300, threshold=0.5)
    assert score > 0.5 and 0 < x < 200 < x + w < 400 and 0 < y < 150 < y + h < 300
    edge = np.zeros((7, 7), np.float32)
    edge[:, :3] = 1.0  # the left part of the crop, top to bottom
    (x, y, w, h), _ = box_from_view_map(edge, tf, 400, 300, threshold=0.5)
    assert (x, y, y + h) == (0.0, 0.0, 300.0) and x + w < 200  # extended left, up and down; not right


def test_view_geometry_of_a_fixed_size_resize():
    import torchvision.transforms as T

    from dva.opa.geometry import view_geometry

    tf = T.Compose([T.Resize((240, 320)), T.CenterCrop(224), T.ToTensor()])
    sx, sy, left, top, c = view_geometry(tf, 400, 300)
    assert (sx, sy, left, top, c) == (320 / 400, 240 / 300, 48.0, 8.0, 224)
