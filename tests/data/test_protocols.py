"""Protocol logic and the published-count checks, on in-memory records."""
from __future__ import annotations

import pytest

from dva.data import DatasetWarning, ImageRecord
from dva.data.protocols import PUBLISHED, finish_split, half_of, split_by_class


def _records(per_class: list[int]) -> list[ImageRecord]:
    return [ImageRecord(f"/x/{c}_{i}.jpg", c) for c, n in enumerate(per_class) for i in range(n)]


def test_published_totals_add_up():
    for name, pub in PUBLISHED.items():
        if pub.closed_images:
            assert sum(pub.closed_images) == pub.total_images, name
        if pub.open_images:
            assert sum(pub.open_images) == pub.total_images, name


def test_cub_shaped_records_pass_silently(recwarn):
    # 200 classes: 5,864 images in the first 100 and 5,924 in the last 100.
    per_class = [59] * 64 + [58] * 36 + [60] * 24 + [59] * 76
    recs = _records(per_class)
    train, test = split_by_class(recs, PUBLISHED["cub200"].open_train_classes)
    assert (len(train), len(test)) == (5_864, 5_924)
    s = finish_split("cub200", "open", train, test, {}, strict_counts=True)
    assert s.warnings == []
    assert not [w for w in recwarn if issubclass(w.category, DatasetWarning)]


def test_one_image_missing_is_loud():
    per_class = [59] * 64 + [58] * 36 + [60] * 24 + [59] * 76
    recs = _records(per_class)[1:]
    train, test = split_by_class(recs, 100)
    with pytest.warns(DatasetWarning, match="5,863 train / 5,924 test images"):
        s = finish_split("cub200", "open", train, test, {})
    assert len(s.warnings) == 1
    with pytest.raises(ValueError, match="NOT be comparable"):
        finish_split("cub200", "open", train, test, {}, strict_counts=True)


def test_wrong_class_count_reported():
    recs = _records([2] * 150)
    train, test = split_by_class(recs, 100)
    with pytest.warns(DatasetWarning, match="100 train / 50 test classes instead of 100 / 100"):
        finish_split("cub200", "open", train, test, {})


def test_unpublished_dataset_has_no_count_check(recwarn):
    recs = _records([3, 3, 3])
    finish_split("folder", "open", *split_by_class(recs, half_of(3)), {})
    assert not recwarn.list


def test_empty_side_is_an_error():
    with pytest.raises(ValueError, match="no test images"):
        finish_split("folder", "open", _records([2]), [], {})
    with pytest.raises(ValueError, match="no training images"):
        finish_split("folder", "open", [], _records([2]), {})


def test_half_of():
    assert [half_of(n) for n in (2, 3, 20, 21)] == [1, 1, 10, 10]
