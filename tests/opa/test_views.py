"""OPA views (src/dva/opa/views.py): the object crop, the background fill."""
import numpy as np
from PIL import Image

from dva.config import OPAConfig
from dva.opa.views import background_view, discriminative_view, make_views


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
