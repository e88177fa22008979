"""Box geometry (src/dva/opa/geometry.py): boxes from response maps, enlarging, mirroring, clipping."""
import numpy as np

from dva.opa.geometry import box_from_map, clip_box, expand_box, mirror_box


def iou(a, b):
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    ix = max(0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    iy = max(0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter)


def test_box_from_map_finds_blob_and_scores():
    m = np.zeros((14, 14), np.float32)
    m[3:7, 8:12] = 1.0
    m[12, 0] = 0.5  # a smaller separate component is ignored
    box, score = box_from_map(m, 140, 140, threshold=0.4)
    assert iou(box, (80, 30, 40, 40)) > 0.8
    loose, _ = box_from_map(m, 140, 140)  # at the mean: the bilinear skirt widens the box
    assert loose[2] > box[2] and iou(loose, (80, 30, 40, 40)) > 0.5
    assert score > 0.8
    _, flat_score = box_from_map(np.ones((7, 7)), 70, 70)
    assert flat_score == 0.0
    assert box_from_map(np.zeros((7, 7)), 70, 50) == ((0.0, 0.0, 70.0, 50.0), 0.0)  # no response: whole image


def test_expand_box_exact_geometry():
    # 40x40 box centred at (100, 100): x1.1 -> 44x44; already square (aspect ok).
    assert expand_box((80, 80, 40, 40), 300, 300, 1.1, 0.75) == (78, 78, 122, 122)
    # Tall box 20x80 -> 22x88 -> width padded to 0.75*88 = 66, centred at x=110.
    assert expand_box((100, 60, 20, 80), 300, 300, 1.1, 0.75) == (77, 56, 143, 144)
    # Wide box 100x10 -> 110x11 -> height padded to 82.5, centred at y=105.
    assert expand_box((50, 100, 100, 10), 300, 300, 1.1, 0.75) == (45, 63, 155, 147)


def test_expand_box_clips_at_borders():
    assert expand_box((0, 0, 50, 50), 60, 40, 1.1, 0.75) == (0, 0, 53, 40)
    assert expand_box((50, 30, 10, 10), 60, 40, 1.5, 0.75) == (47, 27, 60, 40)
    x0, y0, x1, y1 = expand_box((59.5, 39.5, 0.1, 0.1), 60, 40)
    assert x1 > x0 and y1 > y0  # never empty


def test_mirror_box():
    assert mirror_box((10, 5, 20, 30), 100) == (70, 5, 20, 30)
    assert mirror_box(mirror_box((10.5, 5, 20, 30), 100), 100) == (10.5, 5, 20, 30)


def test_clip_box():
    assert clip_box(-5.0, 10.0, 50.0, 120.0, 40, 100) == (0.0, 10.0, 40.0, 90.0)
    assert clip_box(45.0, 0.0, 60.0, 10.0, 40, 100) is None  # wholly outside
    assert clip_box(10.0, 10.0, 10.5, 20.0, 40, 100) is None  # under a pixel wide
