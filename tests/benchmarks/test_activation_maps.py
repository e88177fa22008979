"""The activation-map benchmark's geometry: boxes into the model's view, map mass inside a box."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.activation_maps import run as maps


def test_box_in_view_follows_resize_and_centre_crop():
    # 400 x 300 image, short side -> 256 (scale 256/300), centre crop 224.
    s = 256 / 300
    ox, oy = (400 * s - 224) / 2, (300 * s - 224) / 2
    got = maps.box_in_view((100, 60, 300, 240), (400, 300), 256, 224)
    assert got == pytest.approx((100 * s - ox, 60 * s - oy, 300 * s - ox, 240 * s - oy))
    # The whole image maps onto the whole view (clipped to the crop).
    assert maps.box_in_view((0, 0, 400, 300), (400, 300), 256, 224) == (0.0, 0.0, 224.0, 224.0)


def test_map_in_box_mass_and_peak():
    m = np.zeros((7, 7), np.float32)
    m[1, 1] = 1.0  # a single hot cell in the top-left region
    mass, hit = maps.map_in_box(m, (0, 0, 112, 112), 224)
    assert mass > 0.95 and hit
    mass, hit = maps.map_in_box(m, (112, 112, 224, 224), 224)
    assert mass < 0.05 and not hit
    # A flat map puts the box's area share inside it.
    mass, _ = maps.map_in_box(np.ones((7, 7), np.float32), (0, 0, 112, 224), 224)
    assert mass == pytest.approx(0.5, abs=1e-6)
