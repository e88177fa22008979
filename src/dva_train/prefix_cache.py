"""Frozen-prefix cache: run the layers below the first adapter once per view, then train on it.

When adapters sit only in the later stages (e.g. the last two of a MobileNetV2), everything below
them is a fixed function of the input image. Computing it once per (image, view, flip) and
keeping it in memory (float16) turns an epoch into a pass over the small top of the network:
tens of times faster on a CPU. The price is augmentation limited to the cached views
(here: original / object / background, each optionally mirrored).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from dva.model import DVAModel
from dva.runtime.frozen import FrozenRunner


class PrefixCache:
    """Cached prefix activations ``(N, flips, *shape)`` for each view name."""

    def __init__(self, tensors: dict[str, torch.Tensor], keep: torch.Tensor, labels: torch.Tensor) -> None:
        self.tensors, self.keep, self.labels = tensors, keep, labels
        self.flips = next(iter(tensors.values())).shape[1]

    def __len__(self) -> int:
        return len(self.labels)

    def save(self, folder: str | Path, keys: dict[str, str]) -> None:
        """One safetensors file per view, named by its content key (atomic)."""
        from safetensors.torch import save as st_save

        from dva.utils import atomic_write_bytes

        for v, t in self.tensors.items():
            atomic_write_bytes(Path(folder) / f"{keys[v]}.safetensors",
                               st_save({"h": t, "keep": self.keep, "labels": self.labels}))

    @classmethod
    def load(cls, folder: str | Path, keys: dict[str, str]) -> PrefixCache | None:
        """The cache for ``keys`` if every view file exists (else None)."""
        from safetensors.torch import load_file

        files = {v: Path(folder) / f"{k}.safetensors" for v, k in keys.items()}
        if not all(f.is_file() for f in files.values()):
            return None
        loaded = {v: load_file(str(f)) for v, f in files.items()}
        # "keep" (has a confident box) is only meaningful in the files keyed by the boxes.
        with_boxes = loaded.get("disc", loaded.get("bg", next(iter(loaded.values()))))
        return cls({v: d["h"] for v, d in loaded.items()}, with_boxes["keep"], with_boxes["labels"])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def batch(self, idx: np.ndarray, flips: np.ndarray | None, device: torch.device) -> dict[str, torch.Tensor]:
        """Views of ``idx``; ``flips[i]`` picks the stored mirror (0 = as is) of sample ``i``."""
        i = torch.as_tensor(idx, dtype=torch.long)
        f = torch.as_tensor(flips if flips is not None else np.zeros(len(idx), int), dtype=torch.long)
        out = {k: t[i, f].to(device).float() for k, t in self.tensors.items()}
        out["keep"] = self.keep[i].to(device)
        out["labels"] = self.labels[i].to(device)
        return out


def cache_keys(model: DVAModel, views: tuple[str, ...], paths: list[str], flips: int, extra: dict,
               labels: dict | None = None) -> dict[str, str]:
    """A content key per view: what the cached activations depend on, hashed.

    The frozen weights (fingerprint), where the prefix ends, the input size, the images, the
    mirrors and, for the object/background views, the boxes and view settings (``extra``).
    """
    # Paths with size and modification time: an image replaced in place invalidates the cache.
    files = "\n".join(f"{p}\t{os.stat(p).st_size}\t{os.stat(p).st_mtime_ns}" for p in paths)
    base = {"fp": model.fingerprint, "split": model.split, "size": model.cfg.backbone.img_size,
            "paths": hashlib.sha256(files.encode()).hexdigest(), "flips": flips, **(labels or {})}
    out = {}
    for v in views:
        d = {**base, "view": v, **({} if v == "x" else extra)}
        out[v] = f"{v}-" + hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return out


@torch.no_grad()
def build_prefix_cache(runner: FrozenRunner, dataset: Dataset, views: tuple[str, ...], batch_size: int,
                       device: torch.device, num_workers: int = 0, desc: str = "cache",
                       progress: bool = True, given: dict[str, torch.Tensor] | None = None) -> PrefixCache:
    """Run ``runner.prefix`` (the frozen layers below the first adapter) over every item of ``dataset``.

    ``dataset`` items are :class:`~dva_train.views.ViewSample` records, each view either
    ``(3, H, W)`` or ``(flips, 3, H, W)``; only the fields named in ``views`` (``x``, ``disc``,
    ``bg``) are computed, except those in ``given`` (``(N, flips, ...)`` float16 prefixes computed
    elsewhere, e.g. by the self-localisation pass over the same view).
    """
    given = {v: t for v, t in (given or {}).items() if v in views}
    for v, t in given.items():
        if len(t) != len(dataset):
            raise ValueError(f"given {v} prefixes: {len(t)} rows for {len(dataset)} images")
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    store: dict[str, list[torch.Tensor]] = {v: [] for v in views if v not in given}
    keeps, labels = [], []
    for item in tqdm(loader, desc=desc, unit="batch", disable=not progress):
        for v in store:
            t = getattr(item, v)
            flat = t.flatten(0, 1) if t.dim() == 5 else t
            h = runner.prefix(flat.to(device)).half().cpu().contiguous()
            store[v].append(h.view(t.shape[0], -1, *h.shape[1:]))
        keeps.append(torch.as_tensor(item.keep, dtype=torch.float32))
        labels.append(torch.as_tensor(item.label, dtype=torch.long))
    built = {v: torch.cat(s).contiguous() for v, s in store.items()}
    tensors = {v: given[v].contiguous() if v in given else built[v] for v in views}
    return PrefixCache(tensors, torch.cat(keeps), torch.cat(labels))
