"""Object boxes for OPA, computed once per training image and cached in the run folder."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dva.config import DVAConfig
from dva.data import load_rgb
from dva.model import DVAModel
from dva.opa import Box, box_from_map, detector_from_spec, load_boxes_cache, read_boxes_file, write_boxes_cache
from dva.transforms import view_transform


class _Whole(Dataset):
    """Whole images squashed to the input size, so the response map covers the full image."""

    def __init__(self, paths: Sequence[str], tf) -> None:
        self.paths, self.tf = list(paths), tf

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = load_rgb(self.paths[i])
        return self.tf(img), img.width, img.height


def compute_boxes(model: DVAModel, paths: Sequence[str], cfg: DVAConfig, cache: str | Path,
                  annotated: dict[str, Box] | None = None, device: torch.device | str = "cpu",
                  progress: bool = True) -> dict[str, tuple[Box, float]]:
    """Boxes ``path -> ((x, y, w, h), score)`` from ``cfg.opa.box_source``.

    ``self`` uses the frozen backbone's response (adapters disabled); results are cached in
    ``cache`` keyed by the backbone fingerprint and input size, so reruns and resumes are free.
    """
    src = cfg.opa.box_source
    if not cfg.opa.enabled or src == "none":
        return {}
    if src == "annotations":
        if cfg.opa.boxes_file:
            return read_boxes_file(cfg.opa.boxes_file)
        if not annotated:
            raise ValueError("opa.box_source=annotations but the dataset has no boxes: set opa.boxes_file")
        return {p: (b, 1.0) for p, b in annotated.items()}
    meta = {"source": src, "fingerprint": model.fingerprint, "img_size": cfg.backbone.img_size,
            "threshold": cfg.opa.threshold, "loc_scale": cfg.opa.loc_scale,
            "detector": cfg.opa.boxes_file if src == "detector" else "", "n": len(paths)}
    cached = load_boxes_cache(cache, meta)
    if cached is not None and all(p in cached for p in paths):
        return cached
    out: dict[str, tuple[Box, float]] = {}
    if src == "detector":
        det = detector_from_spec(cfg.opa.boxes_file)
        for p in tqdm(paths, desc="detect", disable=not progress):
            r = det(load_rgb(p))
            if r is not None:
                out[p] = (tuple(map(float, r[0])), float(r[1]))
    elif src == "self":
        tf = view_transform(round(cfg.backbone.img_size * cfg.opa.loc_scale), model.data_cfg)
        loader = DataLoader(_Whole(paths, tf), batch_size=cfg.train.batch_size_eval,
                            num_workers=cfg.train.num_workers)
        k = 0
        for x, ws, hs in tqdm(loader, desc="boxes", unit="batch", disable=not progress):
            maps = model.activation_map(x.to(device), adapted=False).cpu()
            for m, w, h in zip(maps, ws.tolist(), hs.tolist()):
                out[paths[k]] = box_from_map(m, w, h, cfg.opa.threshold)
                k += 1
    else:
        raise ValueError(f"opa.box_source must be self | annotations | detector | none, got {src!r}")
    write_boxes_cache(cache, out, meta)
    return out
