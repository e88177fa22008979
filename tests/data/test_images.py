"""dva.data.images.to_rgb: 16-bit and EXIF-rotated files decode to the picture a person sees."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dva.data import load_rgb
from dva.data.images import to_rgb


def _gradient(h=48, w=64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return (x * 255 / (w - 1) * 0.7 + y * 255 / (h - 1) * 0.3)


def test_sixteen_bit_grey_png_is_not_white(tmp_path):
    g8 = _gradient().round().astype(np.uint8)
    Image.fromarray(g8.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # mode I;16
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    got = np.asarray(load_rgb(str(tmp_path / "g16.png"))).astype(int)
    assert got.shape == (48, 64, 3)
    assert np.abs(got - g8[..., None]).max() <= 1  # plain convert("RGB") gives ~255 everywhere


@pytest.mark.parametrize("mode,scale", [("I", 257), ("I", 1), ("F", 1 / 255)])
def test_other_high_depth_modes(mode, scale):
    g8 = _gradient().round()
    img = Image.fromarray((g8 * scale).astype(np.int32 if mode == "I" else np.float32), mode)
    got = np.asarray(to_rgb(img)).astype(int)[..., 0]
    assert np.abs(got - g8).max() <= 1


def test_exif_orientation_is_applied_once(tmp_path):
    rng = np.random.default_rng(0)
    up = np.zeros((40, 60, 3), np.uint8)
    up[:10] = (255, 0, 0)  # a red band on top of the upright picture
    up[10:] = rng.integers(0, 40, (30, 60, 3))
    # Stored rotated 90 degrees clockwise, with orientation 8 ("rotate 90 CW to display").
    stored = Image.fromarray(np.rot90(up, k=-1).copy())
    exif = Image.Exif()
    exif[0x0112] = 8
    stored.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    got = load_rgb(str(tmp_path / "rot.jpg"))
    assert got.size == (60, 40)
    a = np.asarray(got).astype(int)
    assert a[:8, :, 0].mean() > 200 and a[12:, :, 0].mean() < 80  # the red band is on top
    again = np.asarray(to_rgb(got))
    assert again.shape == a.shape and np.array_equal(again, a)  # not rotated a second time
