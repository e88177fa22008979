"""ImageListDataset and load_rgb."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from dva.data import ImageListDataset, ImageReadError, ImageRecord, load_rgb


def test_items_and_default_tensor(tmp_path):
    Image.new("L", (5, 4), 128).save(tmp_path / "g.png")  # grayscale -> converted to RGB
    Image.new("RGBA", (3, 2), (255, 0, 0, 10)).save(tmp_path / "a.png")
    ds = ImageListDataset([ImageRecord(str(tmp_path / "g.png"), 3),
                           ImageRecord(str(tmp_path / "a.png"), 7)], None)
    assert len(ds) == 2 and ds.labels == [3, 7]
    x, y, i = ds[0]
    assert x.shape == (3, 4, 5) and x.dtype == torch.float32 and (y, i) == (3, 0)
    assert torch.allclose(x, torch.full_like(x, 128 / 255))
    x, y, i = ds[1]
    assert x.shape == (3, 2, 3) and (y, i) == (7, 1) and x[0].max() == 1.0


def test_transform_applied(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.jpg")
    ds = ImageListDataset([ImageRecord(str(tmp_path / "x.jpg"), 0)], lambda im: im.size)
    assert ds[0] == ((8, 8), 0, 0)


def test_dataloader_batches(tmp_path):
    for k in range(4):
        Image.new("RGB", (6, 6), (k, k, k)).save(tmp_path / f"{k}.png")
    ds = ImageListDataset([ImageRecord(str(tmp_path / f"{k}.png"), k) for k in range(4)])
    x, y, i = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 3, 6, 6) and y.tolist() == [0, 1, 2, 3] and i.tolist() == [0, 1, 2, 3]


def test_unreadable_file_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg.*remove it from the dataset folder or replace it"):
        load_rgb(str(bad))
    with pytest.raises(ValueError, match="broken.jpg"):  # ImageReadError is a ValueError
        ImageListDataset([ImageRecord(str(bad), 0)])[0]


def test_missing_file_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.png"):
        load_rgb(str(tmp_path / "gone.png"))


def test_truncated_file_named(tmp_path):
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="t.png"):
        load_rgb(str(tmp_path / "t.png"))
