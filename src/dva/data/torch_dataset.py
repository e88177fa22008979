"""A PyTorch ``Dataset`` over :class:`~dva.data.records.ImageRecord` lists."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from dva.data.images import to_rgb
from dva.data.records import ImageRecord


class ImageReadError(ValueError):
    """An image file exists but cannot be decoded."""


def load_rgb(path: str) -> Image.Image:
    """Open an image as an RGB ``PIL.Image`` (fully decoded, file closed).

    Raises:
        FileNotFoundError: The file does not exist (the message names it).
        ImageReadError: The file cannot be decoded (the message names it).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            return to_rgb(img)  # decodes (EXIF-upright, 16-bit aware), so the file can be closed here
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc} (remove it from the dataset folder or replace it "
                             "with a readable copy)") from exc


class UnreadableImagesError(ImageReadError):
    """Several image files of a dataset cannot be decoded; ``bad`` lists every one as ``(path, reason)``."""

    def __init__(self, bad: Sequence[tuple[str, str]], shown: int = 10, hint: str = "") -> None:
        self.bad, self._shown, self._hint = list(bad), shown, hint
        lines = [f"  {path}: {reason}" for path, reason in self.bad[:shown]]
        if len(self.bad) > shown:
            lines.append(f"  ... and {len(self.bad) - shown} more{hint}")
        super().__init__(f"cannot read {len(self.bad)} image file(s):\n" + "\n".join(lines)
                         + "\nremove them from the dataset folder or replace them with readable copies")

    def __reduce__(self) -> tuple:  # pickled with its arguments (e.g. out of a worker process)
        return type(self), (self.bad, self._shown, self._hint)


def find_unreadable(paths: Sequence[str], threads: int = 4) -> list[tuple[str, str]]:
    """Every file of ``paths`` that :func:`load_rgb` cannot decode, with the reason, in input order.

    A full decode of each image (a truncated JPEG opens fine and fails only when its pixels are
    read), in ``threads`` threads: Pillow releases the GIL while it decodes.
    """
    from concurrent.futures import ThreadPoolExecutor

    def reason(path: str) -> str | None:
        try:
            load_rgb(path)
        except (FileNotFoundError, ImageReadError) as exc:
            return str(exc.__cause__ or exc).split("\n")[0]
        return None

    with ThreadPoolExecutor(max(1, threads)) as pool:
        reasons = list(pool.map(reason, paths))
    return [(p, r) for p, r in zip(paths, reasons) if r is not None]


def _to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


class ImageListDataset(Dataset):
    """Images of a record list; item ``i`` is ``(transform(image), label, i)``.

    Args:
        records: The images.
        transform: Callable applied to the RGB ``PIL.Image``; ``None`` gives a float
            ``(3, H, W)`` tensor in ``[0, 1]``.
    """

    def __init__(self, records: Sequence[ImageRecord],
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[int]:
        """Class id of every item, in order."""
        return [r.label for r in self.records]

    def __getitem__(self, i: int) -> tuple[Any, int, int]:
        rec = self.records[i]
        img = load_rgb(rec.path)
        x = self.transform(img) if self.transform is not None else _to_tensor(img)
        return x, rec.label, i
