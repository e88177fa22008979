"""The ``self`` box source: the frozen backbone localises the object itself (docs/METHOD.md, OPA).

No extra model: the response map of the frozen encoder (adapters disabled) on each image,
thresholded into one box by :func:`dva.opa.geometry.box_from_map`. ``opa.loc_view`` picks the
image it looks at: ``whole`` (the whole image squashed to a square) or ``view`` (the original
centre view, whose frozen prefix the trainer caches — the same pass can hand it over).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dva.data import load_rgb
from dva.opa.geometry import Boxes, box_from_map, box_from_view_map

if TYPE_CHECKING:
    from dva.opa.job import BoxJob


class _Whole(Dataset):
    """Each image through ``tf`` (whole and squashed, or the original view), with its size."""

    def __init__(self, paths: Sequence[str], tf: Callable) -> None:
        self.paths, self.tf = list(paths), tf

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Any, int, int]:
        img = load_rgb(self.paths[i])
        return self.tf(img), img.width, img.height


def self_boxes(job: BoxJob) -> Boxes:
    """The frozen backbone's response (adapters disabled) on each whole image, or on its original view.

    ``opa.loc_view=whole``: the whole image squashed to ``loc_scale`` x the input size.
    ``opa.loc_view=view``: the original (x) view at ``loc_scale`` x the input size; with
    ``job.prefix_sink`` (and ``loc_scale`` 1) the same pass also yields the x view's frozen prefix.
    """
    from dva.runtime.frozen import FrozenRunner
    from dva.transforms import eval_transform, view_transform

    cfg, model = job.cfg, job.model
    runner = job.runner or FrozenRunner(model, job.device)
    size = round(cfg.backbone.img_size * cfg.opa.loc_scale)
    on_view = cfg.opa.loc_view == "view"
    tf = eval_transform(size, model.data_cfg) if on_view else view_transform(size, model.data_cfg)
    share = on_view and job.prefix_sink is not None and size == cfg.backbone.img_size
    loader = DataLoader(_Whole(job.paths, tf), batch_size=cfg.train.batch_size_eval,
                        num_workers=cfg.train.num_workers)
    out: Boxes = {}
    k = 0
    for x, ws, hs in tqdm(loader, desc="boxes", unit="batch", disable=not job.progress):
        if share:
            h, maps = runner.prefix_and_map(x)
            job.prefix_sink.append(h.half().cpu().contiguous())
        else:
            maps = runner.activation_map(x)
        for m, w, h_ in zip(maps, ws.tolist(), hs.tolist()):
            out[job.paths[k]] = (box_from_view_map(m, tf, w, h_, cfg.opa.threshold) if on_view
                                 else box_from_map(m, w, h_, cfg.opa.threshold))
            k += 1
    return out
