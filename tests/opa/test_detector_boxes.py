"""The detector box sources (src/dva/opa/detector_boxes.py): the user hook, one box per image, the cache."""
import json
import sys
import types

import pytest
from _helpers import small_images

from dva.config import DVAConfig
from dva.opa.detector_boxes import detector_from_spec, each_image
from dva.opa.detectors.common import Detection
from dva.opa.job import BoxJob
from dva.opa.sources import compute_boxes


def _images(tmp_path, n=3):
    return small_images(tmp_path, n)


def test_detector_from_spec(monkeypatch):
    with pytest.raises(ValueError, match="module:function"):
        detector_from_spec("no_colon")
    mod = types.ModuleType("fake_det_mod")
    mod.find = lambda img: ((1, 2, 3, 4), 0.9)
    monkeypatch.setitem(sys.modules, "fake_det_mod", mod)
    assert detector_from_spec("fake_det_mod:find") is mod.find


def test_each_image_keeps_labels_and_whole_image_when_nothing_found(tmp_path):
    paths = _images(tmp_path, 2)
    job = BoxJob(paths, DVAConfig(), None, progress=False)
    found = each_image(job, lambda img: Detection((1, 2, 3, 4), 0.7, "dog") if img.width == 40 else None, "t")
    assert found == {paths[0]: ((1.0, 2.0, 3.0, 4.0), 0.7), paths[1]: ((0.0, 0.0, 50.0, 30.0), 0.0)}
    assert found.labels == {paths[0]: "dog"}


def test_compute_boxes_detector_source_is_cached(tmp_path, monkeypatch):
    calls = []

    def find(img):
        calls.append(img.size)
        return None if img.size[0] == 50 and skip_50 else ((1, 2, img.size[0] - 2, 20), 0.75)

    mod = types.ModuleType("fake_det_mod2")
    mod.find = find
    monkeypatch.setitem(sys.modules, "fake_det_mod2", mod)
    cfg = DVAConfig()
    cfg.opa.box_source, cfg.opa.boxes_file = "detector", "fake_det_mod2:find"
    model = types.SimpleNamespace(fingerprint="fp0")
    paths = _images(tmp_path)
    cache = tmp_path / "run/boxes.json"
    skip_50 = True  # no box for the 50 px wide image: it is left out
    got = compute_boxes(model, paths, cfg, cache, progress=False)
    assert got == {paths[0]: ((1.0, 2.0, 38.0, 20.0), 0.75), paths[2]: ((1.0, 2.0, 58.0, 20.0), 0.75)}
    assert calls == [(40, 30), (50, 30), (60, 30)]
    meta = json.loads(cache.read_text())["meta"]
    assert meta["source"] == "detector" and meta["setting"] == "fake_det_mod2:find" and meta["n"] == 3
    skip_50 = False
    compute_boxes(model, paths, cfg, cache, progress=False)  # an image missing from the cache: recomputed
    assert len(calls) == 6
    assert compute_boxes(model, paths, cfg, cache, progress=False)[paths[1]] == ((1.0, 2.0, 48.0, 20.0), 0.75)
    assert len(calls) == 6  # same settings, every image cached: the detector did not run
    model.fingerprint = "fp1"  # other frozen weights: recomputed
    compute_boxes(model, paths, cfg, cache, progress=False)
    assert len(calls) == 9
