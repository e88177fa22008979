"""Boxes on disk (src/dva/opa/cache.py): boxes files, the boxes cache, version-1 cache files."""
import json
import types

import pytest
from PIL import Image

from dva.config import DVAConfig
from dva.opa.cache import VERSION, FoundBoxes, load_boxes_cache, read_boxes_file, upgrade_meta, write_boxes_cache
from dva.opa.sources import cache_key, compute_boxes


def test_read_boxes_file(tmp_path):
    f = tmp_path / "boxes.csv"
    f.write_text("path,x,y,w,h,score\na.jpg,1,2,3,4,0.9\n/abs/b.jpg,5,6,7,8\n")
    boxes = read_boxes_file(f)
    assert boxes[str((tmp_path / "a.jpg").resolve())] == ((1.0, 2.0, 3.0, 4.0), 0.9)
    assert boxes["/abs/b.jpg"] == ((5.0, 6.0, 7.0, 8.0), 1.0)
    f.write_text("a.jpg,1,2,x,4\n")
    with pytest.raises(ValueError, match=r"boxes.csv:1"):
        read_boxes_file(f)
    with pytest.raises(FileNotFoundError, match="opa.box_source=self"):
        read_boxes_file(tmp_path / "missing.csv")


def test_boxes_cache_round_trip_and_meta_check(tmp_path):
    path = tmp_path / "boxes.json"
    boxes = {"/a.jpg": ((1.0, 2.0, 3.0, 4.0), 0.25), "/b.jpg": ((0.0, 0.0, 9.0, 9.0), 0.0)}
    meta = {"source": "self", "n": 2}
    write_boxes_cache(path, boxes, meta)
    assert json.loads(path.read_text())["version"] == VERSION == 2
    assert load_boxes_cache(path, meta) == boxes
    assert load_boxes_cache(path, {**meta, "n": 3}) is None  # other settings: recompute
    assert load_boxes_cache(tmp_path / "none.json", meta) is None
    assert read_boxes_file(path) == boxes  # the cache is also a valid boxes file
    path.write_text("{not json")
    assert load_boxes_cache(path, meta) is None
    path.write_text(json.dumps({"meta": meta}))  # no boxes: not ours, recomputed
    assert load_boxes_cache(path, meta) is None
    path.write_text(json.dumps({"version": 3, "meta": meta, "boxes": {}}))  # a later format
    assert load_boxes_cache(path, meta) is None


def test_boxes_cache_keeps_labels(tmp_path):
    path = tmp_path / "boxes.json"
    found = FoundBoxes({"/a.jpg": ((1.0, 2.0, 3.0, 4.0), 0.9)}, {"/a.jpg": "dog"})
    meta = {"source": "yolox", "setting": {"classes": [16]}, "n": 1}
    write_boxes_cache(path, found, meta)
    back = load_boxes_cache(path, meta)
    assert back == found and back.labels == {"/a.jpg": "dog"}
    write_boxes_cache(path, {"/a.jpg": ((1.0, 2.0, 3.0, 4.0), 0.9)}, meta)  # plain boxes: no labels
    assert "labels" not in json.loads(path.read_text()) and load_boxes_cache(path, meta).labels == {}


def test_upgrade_meta_of_version_1():
    old_self = {"source": "self", "fingerprint": "fp", "img_size": 224, "threshold": 0.4, "loc_scale": 1.0,
                "detector": "", "n": 2}
    assert upgrade_meta(old_self) == {**{k: v for k, v in old_self.items() if k != "detector"},
                                      "setting": "", "loc_view": "whole"}
    view = {**old_self, "loc_view": "view"}  # version 1 wrote loc_view only when it was not "whole"
    assert upgrade_meta(view)["loc_view"] == "view"
    old_yolox = {"source": "yolox", "detector": {"classes": [14]}, "n": 1}
    assert upgrade_meta(old_yolox) == {"source": "yolox", "setting": {"classes": [14]}, "n": 1}
    assert old_yolox["detector"] == {"classes": [14]}  # the argument is not changed


def test_version_1_cache_is_migrated_on_load(tmp_path):
    """A boxes.json from before the format had a version is read, and rewritten in the current form."""
    paths = []
    for i in range(2):
        p = tmp_path / f"im{i}.png"
        Image.new("RGB", (40, 30)).save(p)
        paths.append(str(p))
    cfg = DVAConfig()
    model = types.SimpleNamespace(fingerprint="fp")  # no activation_map: a recomputation would fail
    cache = tmp_path / "boxes.json"
    v1_meta = {"source": "self", "fingerprint": "fp", "img_size": cfg.backbone.img_size,
               "threshold": cfg.opa.threshold, "loc_scale": cfg.opa.loc_scale, "detector": "", "n": 2}
    cache.write_text(json.dumps({"meta": v1_meta, "boxes": {p: [0, 0, 5, 5, 0.5] for p in paths}}))
    got = compute_boxes(model, paths, cfg, cache, progress=False)
    assert got == {p: ((0.0, 0.0, 5.0, 5.0), 0.5) for p in paths}
    data = json.loads(cache.read_text())
    assert data["version"] == 2 and data["meta"] == cache_key("self", cfg, model, 2)
    assert data["meta"]["setting"] == "" and data["meta"]["loc_view"] == "whole" and "detector" not in data["meta"]
    assert compute_boxes(model, paths, cfg, cache, progress=False) == got  # and reads back as version 2
    # A version-1 file of other settings is not migrated but recomputed (here: the model cannot run).
    cache.write_text(json.dumps({"meta": {**v1_meta, "fingerprint": "other"}, "boxes": {}}))
    assert load_boxes_cache(cache, cache_key("self", cfg, model, 2)) is None
    assert "version" not in json.loads(cache.read_text())  # left alone: compute_boxes overwrites it
