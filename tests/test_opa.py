"""OPA views (src/dva/opa.py): the object crop, the background fill, mirroring."""
import numpy as np
from PIL import Image

from dva.config import OPAConfig
from dva.opa import background_view, discriminative_view, expand_box, make_views, mirror_box


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


def test_views():
    img = Image.new("RGB", (100, 80), (10, 20, 30))
    d = discriminative_view(img, (20, 20, 40, 40), 1.0, 0.75)
    assert d.size == (40, 40)
    assert discriminative_view(img, None) is img
    bg = background_view(img, (20, 10, 30, 40), (200, 100, 50))
    a = np.asarray(bg)
    assert (a[10:50, 20:50] == (200, 100, 50)).all()
    assert (a[:10] == (10, 20, 30)).all() and (a[:, :20] == (10, 20, 30)).all() and (a[:, 50:] == (10, 20, 30)).all()
    assert np.asarray(img)[30, 30].tolist() == [10, 20, 30]  # the original is untouched


def test_mirror_box():
    assert mirror_box((10, 5, 20, 30), 100) == (70, 5, 20, 30)
    assert mirror_box(mirror_box((10.5, 5, 20, 30), 100), 100) == (10.5, 5, 20, 30)


def test_make_views():
    img = Image.new("RGB", (100, 80), (10, 20, 30))
    opa = OPAConfig(expand=1.0, aspect=0.5)
    d, b, keep = make_views(img, (20, 20, 40, 40), opa, (1, 2, 3))
    assert keep is True and d.size == (40, 40)
    assert np.asarray(b)[30, 30].tolist() == [1, 2, 3] and np.asarray(b)[0, 0].tolist() == [10, 20, 30]
    d, b, keep = make_views(img, None, opa, (1, 2, 3))
    assert (d, b, keep) == (img, img, False)
    opa.background = False  # no background view: x_bg is the image itself
    _, b, keep = make_views(img, (20, 20, 40, 40), opa, (1, 2, 3))
    assert b is img and keep is True
