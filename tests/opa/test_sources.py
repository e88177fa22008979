"""The box-source registry (src/dva/opa/sources.py, names.py): names, thresholds, the cached computation."""
import json
import sys
import types

import pytest
from _helpers import small_images

from dva.config import DVAConfig
from dva.opa.cache import write_boxes_cache
from dva.opa.job import BoxSource
from dva.opa.names import SOURCE_NAMES
from dva.opa.sources import SOURCES, _registry, cache_key, compute_boxes, min_score


def _images(tmp_path, n=3):
    return small_images(tmp_path, n)


def test_min_score_per_source():
    assert min_score("self", -1.0) == 0.15
    assert min_score("annotations", -1.0) == 0.5
    assert min_score("detector", -1.0) == 0.5
    assert min_score("none", -1.0) == 0.5
    assert min_score("self", 0.3) == 0.3 and min_score("detector", 0.0) == 0.0
    assert min_score("yolox", -1.0) == 0.5 and min_score("saliency", -1.0) == 0.15
    assert min_score("groundingdino", -1.0) == 0.5 and min_score("owlv2", -1.0) == 0.3


def test_sources_registry():
    assert list(SOURCES) == list(SOURCE_NAMES) == [
        "self", "annotations", "none", "detector", "yolox", "saliency", "groundingdino", "owlv2"]
    assert SOURCES["annotations"].cached is False and SOURCES["none"].cached is False and SOURCES["self"].cached
    assert SOURCES["self"].uses_model and SOURCES["detector"].uses_model and not SOURCES["yolox"].uses_model
    cfg = DVAConfig()
    cfg.opa.boxes_file = "pkg.mod:fn"
    assert SOURCES["detector"].setting(cfg) == "pkg.mod:fn" and SOURCES["self"].setting(cfg) == ""
    cfg.opa.prompt = "a bird"
    assert SOURCES["owlv2"].setting(cfg) == {"model": cfg.opa.owlv2_model, "prompt": ["a photo of a bird"]}


def test_config_accepts_exactly_the_registered_sources():
    """Config validation reads the names, not the registry: the two cannot drift apart."""
    for name in SOURCES:
        assert DVAConfig.from_dict({"opa": {"box_source": name}}).opa.box_source == name
    listed = ", ".join(SOURCES)
    with pytest.raises(ValueError, match=f"opa.box_source='yolo9000' is not one of {listed}$"):
        DVAConfig.from_dict({"opa": {"box_source": "yolo9000"}})


def test_registry_refuses_a_source_without_a_name():
    one = BoxSource(lambda job: {})
    with pytest.raises(ImportError, match=r"'extra'.*dva/opa/names.py"):
        _registry({**{n: one for n in SOURCE_NAMES}, "extra": one})
    with pytest.raises(ImportError, match=r"SOURCE_NAMES lists .*'owlv2'"):
        _registry({n: one for n in SOURCE_NAMES if n != "owlv2"})
    assert list(_registry({n: one for n in reversed(SOURCE_NAMES)})) == list(SOURCE_NAMES)  # names' order


def test_cache_key_per_source():
    cfg = DVAConfig()
    model = types.SimpleNamespace(fingerprint="fp")
    assert cache_key("self", cfg, model, 3) == {
        "source": "self", "setting": "", "n": 3, "fingerprint": "fp", "img_size": cfg.backbone.img_size,
        "threshold": cfg.opa.threshold, "loc_scale": cfg.opa.loc_scale, "loc_view": cfg.opa.loc_view}
    cfg.opa.prompt = "bird"
    assert cache_key("owlv2", cfg, None, 1) == {
        "source": "owlv2", "setting": {"model": cfg.opa.owlv2_model, "prompt": ["a photo of a bird"]}, "n": 1}
    with pytest.raises(ValueError, match="box_source=self needs the frozen backbone"):
        cache_key("self", cfg, None, 1)


def test_compute_boxes_needs_the_model_for_self(tmp_path):
    with pytest.raises(ValueError, match="box_source=self needs the frozen backbone"):
        compute_boxes(None, ["/a.jpg"], DVAConfig(), tmp_path / "boxes.json")


def test_compute_boxes_cache_hit_skips_the_source(tmp_path):
    cfg = DVAConfig()
    cfg.opa.box_source = "self"
    paths = _images(tmp_path, 2)
    model = types.SimpleNamespace(fingerprint="fp")
    cache = tmp_path / "boxes.json"
    stored = {p: ((0.0, 0.0, 5.0, 5.0), 0.5) for p in paths}
    write_boxes_cache(cache, stored, cache_key("self", cfg, model, 2))
    # The model has no activation_map: a hit must not touch it.
    assert compute_boxes(model, paths, cfg, cache, progress=False) == stored
    cfg.opa.loc_view = "view"  # another setting of the source: a miss, which runs the (absent) network
    with pytest.raises(AttributeError):
        compute_boxes(model, paths, cfg, cache, progress=False)


def test_compute_boxes_annotations_and_none(tmp_path):
    cfg = DVAConfig()
    cfg.opa.box_source = "annotations"
    ann = {"/a.jpg": (1.0, 2.0, 3.0, 4.0)}
    assert compute_boxes(None, ["/a.jpg"], cfg, tmp_path / "b.json", ann) == {"/a.jpg": ((1.0, 2.0, 3.0, 4.0), 1.0)}
    assert not (tmp_path / "b.json").exists()  # annotations are not cached
    with pytest.raises(ValueError, match="has no boxes"):
        compute_boxes(None, ["/a.jpg"], cfg, tmp_path / "b.json", {})
    f = tmp_path / "mine.csv"
    f.write_text("/x.jpg,1,1,2,2,0.3\n")
    cfg.opa.boxes_file = str(f)
    assert compute_boxes(None, ["/x.jpg"], cfg, tmp_path / "b.json", ann) == {"/x.jpg": ((1.0, 1.0, 2.0, 2.0), 0.3)}
    cfg.opa.box_source = "none"
    assert compute_boxes(None, ["/x.jpg"], cfg, tmp_path / "b.json") == {}
    assert not (tmp_path / "b.json").exists()
    cfg.opa.box_source, cfg.opa.enabled = "annotations", False
    assert compute_boxes(None, ["/x.jpg"], cfg, tmp_path / "b.json", ann) == {}
    cfg.opa.box_source, cfg.opa.enabled = "yolo9000", True
    with pytest.raises(ValueError, match=r"one of self \| annotations \| none \| detector \| yolox \| saliency \| "
                                         r"groundingdino \| owlv2, got 'yolo9000'"):
        compute_boxes(None, ["/x.jpg"], cfg, tmp_path / "b.json")


def test_cached_meta_is_the_cache_key(tmp_path, monkeypatch):
    mod = types.ModuleType("fake_det_mod_meta")
    mod.find = lambda img: ((0, 0, 2, 2), 1.0)
    monkeypatch.setitem(sys.modules, "fake_det_mod_meta", mod)
    cfg = DVAConfig()
    cfg.opa.box_source, cfg.opa.boxes_file = "detector", "fake_det_mod_meta:find"
    model = types.SimpleNamespace(fingerprint="fp")
    compute_boxes(model, _images(tmp_path, 1), cfg, tmp_path / "boxes.json", progress=False)
    meta = json.loads((tmp_path / "boxes.json").read_text())["meta"]
    assert meta == cache_key("detector", cfg, model, 1) and meta["setting"] == "fake_det_mod_meta:find"
