"""The dataset registry and the public API of dva.data."""
from __future__ import annotations

import pytest

import dva.data as data


def test_datasets_tuple():
    assert data.DATASETS == ("cub200", "cars196", "aircraft", "nabirds", "dogs", "folder", "csv",
                             "cub100", "synthetic")
    for name in data.DATASETS:
        assert callable(data.get_reader(name))


def test_aliases_and_unknown():
    assert data.get_reader("CUB") is data.get_reader("cub200")
    with pytest.raises(ValueError, match="cub200, cars196"):
        data.load_split("imagenet", "/tmp")


def test_public_names():
    for name in ("load_split", "DATASETS", "make_synthetic", "ImageListDataset", "load_rgb",
                 "ImageRecord", "Split"):
        assert hasattr(data, name), name
    with pytest.raises(AttributeError):
        data.no_such_name  # noqa: B018


def test_records_are_frozen_and_split_summary():
    r = data.ImageRecord("/a.jpg", 1, (0.0, 0.0, 2.0, 2.0))
    with pytest.raises(AttributeError):
        r.label = 2  # type: ignore[misc]
    s = data.Split("x", "open", [r], [data.ImageRecord("/b.jpg", 2)], {1: "a", 2: "b"})
    assert s.summary()["train_images"] == 1 and s.summary()["test_boxes"] == 0
    assert s.warnings == [] and s.query is None
