"""Training samples with their OPA views, as :class:`ViewSample` records.

``keep`` is 1 when the image has a confident object box (then ``disc`` is the zoomed object and
``bg`` the original with the object filled with the mean colour) and 0 otherwise (then
``disc = x`` and the background term of that sample is masked out; docs/METHOD.md, OPA).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from PIL import ImageOps
from torch.utils.data import Dataset

from dva.config import OPAConfig
from dva.data import load_rgb
from dva.opa.geometry import Box, Boxes, mirror_box
from dva.opa.sources import min_score
from dva.opa.views import make_views


class ViewSample(NamedTuple):
    """One image and its views; ``default_collate`` batches it field by field (still a ViewSample).

    Each view is ``(3, H, W)``, or ``(flips, 3, H, W)`` with ``flips > 1``.
    """

    x: torch.Tensor  # the original view
    disc: torch.Tensor  # the object view (``x`` itself without a confident box)
    bg: torch.Tensor  # the background view (a placeholder without a confident box)
    keep: float  # 1.0: confident box
    label: int
    index: int  # position in the dataset


class ViewDataset(Dataset):
    """OPA views of a list of images.

    Args:
        paths, labels: the training images and their (contiguous) labels.
        boxes: path -> (box, score); boxes below ``opa.min_score`` are ignored.
        x_tf: transform of the original view; ``view_tf``: of the object/background views.
        flips: 1 = as is; 2 = also the mirrored image (items are then stacked on dim 0).
    """

    def __init__(self, paths: Sequence[str], labels: Sequence[int], boxes: Boxes, opa: OPAConfig,
                 fill: Sequence[int], x_tf: Callable, view_tf: Callable, flips: int = 1) -> None:
        self.paths, self.labels = list(paths), list(labels)
        self.boxes, self.opa, self.fill = boxes, opa, fill
        self.x_tf, self.view_tf, self.flips = x_tf, view_tf, flips

    def __len__(self) -> int:
        return len(self.paths)

    def box_of(self, i: int) -> Box | None:
        """The confident box of image ``i``, or None."""
        got = self.boxes.get(self.paths[i]) if self.opa.enabled else None
        if got is None or got[1] < min_score(self.opa.box_source, self.opa.min_score) or got[0][2] < 1 or got[0][3] < 1:
            return None
        return got[0]

    def __getitem__(self, i: int) -> ViewSample:
        img = load_rgb(self.paths[i])
        box = self.box_of(i)
        xs, ds, bs = [], [], []
        for f in range(self.flips):
            im, bx = (ImageOps.mirror(img), mirror_box(box, img.width) if box else None) if f else (img, box)
            d, b, keep = make_views(im, bx, self.opa, self.fill)
            xs.append(self.x_tf(im))
            # No confident box: x_disc is x itself (same tensor, same augmentation), so its DPT
            # term is exactly zero; x_bg is a placeholder that the objective masks out.
            ds.append(self.view_tf(d) if keep else xs[-1])
            bs.append(self.view_tf(b) if keep else xs[-1])
        stack = (lambda t: torch.stack(t)) if self.flips > 1 else (lambda t: t[0])
        return ViewSample(stack(xs), stack(ds), stack(bs), float(box is not None), self.labels[i], i)


def mean_colour(paths: Sequence[str], max_images: int = 256) -> tuple[int, int, int]:
    """Mean RGB of (a strided sample of) the training images, 0-255."""
    step = max(1, len(paths) // max_images)
    acc = np.zeros(3)
    n = 0
    for p in list(paths)[::step][:max_images]:
        acc += np.asarray(load_rgb(p).resize((64, 64)), dtype=np.float64).reshape(-1, 3).mean(0)
        n += 1
    return tuple(int(round(v)) for v in acc / max(n, 1))
