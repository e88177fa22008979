"""Training samples and their OPA views (src/dva_train/views.py)."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dva.config import OPAConfig
from dva_train.views import ViewDataset, ViewSample, mean_colour


def _tf(im):
    """A deterministic transform: 8x8, channels first, 0-255 floats."""
    return torch.as_tensor(np.array(im.resize((8, 8), Image.NEAREST)), dtype=torch.float32).permute(2, 0, 1)


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(3):
        a = np.zeros((40, 60, 3), np.uint8)
        a[:, :30] = (200, 10 * i, 0)  # left half red-ish, right half black: mirroring shows
        a[:, :, 2] = np.arange(60)[None] * 4  # and a horizontal ramp in blue
        p = tmp_path / f"im{i}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
    return paths


def _ds(images, boxes, flips=1, **opa):
    return ViewDataset(images, [0, 1, 2], boxes, OPAConfig(box_source="annotations", **opa), (7, 8, 9), _tf, _tf, flips)


def test_item_is_a_named_record(images):
    boxes = {images[0]: ((0.0, 0.0, 30.0, 40.0), 0.9), images[1]: ((0.0, 0.0, 30.0, 40.0), 0.1)}
    s = _ds(images, boxes)[0]
    assert isinstance(s, ViewSample) and s._fields == ("x", "disc", "bg", "keep", "label", "index")
    assert s.keep == 1.0 and s.label == 0 and s.index == 0
    assert s.x.shape == s.disc.shape == s.bg.shape == (3, 8, 8)
    # The object view is the (expanded, aspect-padded) left half; the background view has it filled.
    assert s.disc[0].mean() > s.x[0].mean()
    assert s.bg[:, :, :3].flatten(1).unique(dim=1).tolist() == [[7.0], [8.0], [9.0]]


def test_no_confident_box_means_disc_is_x(images):
    boxes = {images[1]: ((0.0, 0.0, 30.0, 40.0), 0.1), images[2]: ((5.0, 5.0, 0.5, 10.0), 0.9)}  # low score; < 1 px
    ds = _ds(images, boxes)
    for i in (0, 1, 2):  # no box, a box below 0.5 (annotations), a degenerate box
        s = ds[i]
        assert s.keep == 0.0 and torch.equal(s.disc, s.x) and torch.equal(s.bg, s.x), i
    assert ds.box_of(1) is None
    assert _ds(images, boxes, min_score=0.05).box_of(1) == (0.0, 0.0, 30.0, 40.0)
    assert _ds(images, {images[0]: ((0.0, 0.0, 30.0, 40.0), 0.9)}, enabled=False).box_of(0) is None


def test_flips_stack_the_mirrored_image(images):
    boxes = {images[0]: ((10.0, 8.0, 20.0, 24.0), 0.9)}
    s = _ds(images, boxes, flips=2, expand=1.0, aspect=0.5)[0]  # a crop exactly the box: no rounding
    assert s.x.shape == (2, 3, 8, 8)
    assert torch.equal(s.x[1], s.x[0].flip(-1))
    # The box is mirrored with the image: the mirrored object view is the mirrored object view.
    assert torch.equal(s.disc[1], s.disc[0].flip(-1))
    assert torch.equal(s.bg[1], s.bg[0].flip(-1))
    assert not torch.equal(s.disc[0], s.disc[0].flip(-1))  # (the views are not symmetric themselves)


def test_collate_keeps_the_record(images):
    boxes = {images[0]: ((0.0, 0.0, 30.0, 40.0), 0.9)}
    b = next(iter(DataLoader(_ds(images, boxes), batch_size=3)))
    assert isinstance(b, ViewSample)
    assert b.x.shape == (3, 3, 8, 8) and b.keep.tolist() == [1.0, 0.0, 0.0]
    assert b.label.tolist() == [0, 1, 2] and b.index.tolist() == [0, 1, 2]
    assert b.keep.dtype == torch.float64 and b.label.dtype == torch.int64


def test_mean_colour(tmp_path):
    paths = []
    for i, c in enumerate([(10, 20, 30), (30, 40, 50)]):
        p = tmp_path / f"c{i}.png"
        Image.new("RGB", (16, 16), c).save(p)
        paths.append(str(p))
    assert mean_colour(paths) == (20, 30, 40)
    assert mean_colour(paths, max_images=1) == (10, 20, 30)  # a strided sample
