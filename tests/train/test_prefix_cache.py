"""The frozen-prefix cache (src/dva_train/prefix_cache.py): build, batch, store, key."""
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dva_train.prefix_cache import PrefixCache, build_prefix_cache, cache_keys
from dva_train.views import ViewSample


class FakeModel:
    """Stands in for DVAModel: a 'prefix' that is easy to check (first two channels, doubled)."""

    fingerprint, split = "fp", 2
    cfg = SimpleNamespace(backbone=SimpleNamespace(img_size=8))

    def prefix(self, x):
        return x[:, :2] * 2


class Items(torch.utils.data.Dataset):
    def __init__(self, n=5, flips=2):
        g = torch.Generator().manual_seed(0)
        shape = (flips, 3, 4, 4) if flips > 1 else (3, 4, 4)
        self.items = [ViewSample(torch.randn(shape, generator=g), torch.randn(shape, generator=g),
                                 torch.randn(shape, generator=g), float(i % 2), 10 + i, i) for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_build_runs_the_prefix_on_the_named_views():
    ds = Items()
    c = build_prefix_cache(FakeModel(), ds, ("x", "disc"), batch_size=2, device=torch.device("cpu"), progress=False)
    assert set(c.tensors) == {"x", "disc"} and len(c) == 5 and c.flips == 2
    assert c.tensors["x"].shape == (5, 2, 2, 4, 4) and c.tensors["x"].dtype == torch.float16  # float16 cache
    for i, item in enumerate(ds.items):
        assert torch.equal(c.tensors["x"][i], (item.x[:, :2] * 2).half())
        assert torch.equal(c.tensors["disc"][i], (item.disc[:, :2] * 2).half())
    assert c.keep.tolist() == [0.0, 1.0, 0.0, 1.0, 0.0] and c.keep.dtype == torch.float32
    assert c.labels.tolist() == [10, 11, 12, 13, 14] and c.labels.dtype == torch.int64


def test_single_view_items_get_a_flip_axis_of_one():
    c = build_prefix_cache(FakeModel(), Items(3, flips=1), ("x",), 2, torch.device("cpu"), progress=False)
    assert c.tensors["x"].shape == (3, 1, 2, 4, 4) and c.flips == 1


def test_batch_picks_samples_and_mirrors():
    x = torch.arange(4 * 2 * 3, dtype=torch.float16).view(4, 2, 3)
    c = PrefixCache({"x": x, "disc": -x}, torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([5, 6, 7, 8]))
    b = c.batch(np.array([2, 0]), np.array([1, 0]), torch.device("cpu"))
    assert b["x"].dtype == torch.float32 and b["x"].tolist() == [x[2, 1].tolist(), x[0, 0].tolist()]
    assert torch.equal(b["disc"], -b["x"])
    assert b["keep"].tolist() == [1.0, 1.0] and b["labels"].tolist() == [7, 5]
    assert torch.equal(c.batch(np.array([3]), None, torch.device("cpu"))["x"][0], x[3, 0].float())  # None: as is
    assert c.nbytes() == 2 * x.numel() * 2


def test_save_load_round_trip(tmp_path):
    c = build_prefix_cache(FakeModel(), Items(), ("x", "disc"), 2, torch.device("cpu"), progress=False)
    keys = {"x": "x-abc", "disc": "disc-def"}
    c.save(tmp_path, keys)
    assert sorted(os.listdir(tmp_path)) == ["disc-def.safetensors", "x-abc.safetensors"]
    d = PrefixCache.load(tmp_path, keys)
    assert d is not None and set(d.tensors) == {"x", "disc"}
    for v in c.tensors:
        assert torch.equal(d.tensors[v], c.tensors[v])
    assert torch.equal(d.keep, c.keep) and torch.equal(d.labels, c.labels)
    assert PrefixCache.load(tmp_path, {**keys, "bg": "bg-missing"}) is None  # one view missing: no cache


def _files(tmp_path, n=2):
    paths = []
    for i in range(n):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(b"x" * (i + 1))
        paths.append(str(p))
    return paths


def test_cache_keys_follow_what_the_activations_depend_on(tmp_path):
    paths, m = _files(tmp_path), FakeModel()
    k = cache_keys(m, ("x", "disc"), paths, 2, {"boxes": [1]})
    assert k["x"].startswith("x-") and k["disc"].startswith("disc-") and k["x"] != k["disc"]
    assert cache_keys(m, ("x", "disc"), paths, 2, {"boxes": [1]}) == k  # stable
    other_boxes = cache_keys(m, ("x", "disc"), paths, 2, {"boxes": [2]})
    assert other_boxes["x"] == k["x"] and other_boxes["disc"] != k["disc"]  # boxes matter to the views only
    assert cache_keys(m, ("x",), paths, 1, {})["x"] != k["x"]  # mirrors
    assert cache_keys(m, ("x",), paths, 2, {}, {"labels": "h"})["x"] != k["x"]
    m2 = FakeModel()
    m2.fingerprint = "other"
    assert cache_keys(m2, ("x",), paths, 2, {})["x"] != k["x"]  # frozen weights
    m2.fingerprint, m2.split = "fp", 3
    assert cache_keys(m2, ("x",), paths, 2, {})["x"] != k["x"]  # where the prefix ends
    with open(paths[1], "ab") as f:  # an image replaced in place
        f.write(b"y")
    assert cache_keys(m, ("x",), paths, 2, {})["x"] != k["x"]


def test_missing_image_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        cache_keys(FakeModel(), ("x",), [str(tmp_path / "gone.jpg")], 1, {})
