"""OPA boxes on disk: boxes files given by the user, and the boxes cache (docs/METHOD.md, OPA).

The cache (``boxes.json`` in a run folder, ``*.cache.json`` beside ``dva boxes --out``) is one
JSON object::

    {"version": 2, "meta": {...what the boxes were computed with...},
     "boxes": {path: [x, y, w, h, score]}, "labels": {path: class}}   # labels: detectors only

A cache is used only when its ``meta`` equals the one of the run (:func:`load_boxes_cache`); any
other file is ignored and overwritten. Files written before ``version`` existed (version 1) are
migrated when read — see :func:`upgrade_meta` — and rewritten in the current form on a hit.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dva.opa.geometry import Boxes
from dva.utils import atomic_write_json, read_json

VERSION = 2


def read_boxes_file(path: str | Path) -> Boxes:
    """Read ``path,x,y,w,h[,score]`` (CSV, header optional) or our JSON cache format."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"boxes file {p} not found (set opa.boxes_file or use opa.box_source=self)")
    if p.suffix == ".json":
        data = read_json(p, "boxes file")
        boxes = data.get("boxes", data) if isinstance(data, dict) else None
        if not isinstance(boxes, dict):
            raise ValueError(f"{p}: expected {{path: [x, y, w, h, score]}} or our boxes cache")
        return {k: (tuple(map(float, v[:4])), float(v[4]) if len(v) > 4 else 1.0) for k, v in boxes.items()}
    out: Boxes = {}
    base = p.parent
    for i, line in enumerate(p.read_text().splitlines(), 1):
        parts = [s.strip() for s in line.split(",")]
        if not line.strip() or (i == 1 and parts[0].lower() in ("path", "image")):
            continue
        if len(parts) not in (5, 6):
            raise ValueError(f"{p}:{i}: expected 'path,x,y,w,h[,score]', got {line!r}")
        try:
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            raise ValueError(f"{p}:{i}: non-numeric box in {line!r}") from None
        if not all(math.isfinite(v) for v in vals) or vals[2] <= 0 or vals[3] <= 0:
            raise ValueError(f"{p}:{i}: a box needs finite numbers and a positive width and height, got {line!r}")
        path_i = parts[0] if Path(parts[0]).is_absolute() else str((base / parts[0]).resolve())
        out[path_i] = (tuple(vals[:4]), vals[4] if len(vals) == 5 else 1.0)
    return out


class FoundBoxes(dict):
    """Boxes (``path -> (box, score)``, a plain dict to its users) with each box's class name.

    ``labels``: ``path -> class`` for the sources that name one (a detector's class, ``salient``);
    stored in the boxes cache beside the boxes.
    """

    def __init__(self, boxes: Any = (), labels: dict[str, str] | None = None) -> None:
        super().__init__(boxes)
        self.labels: dict[str, str] = dict(labels or {})


def write_boxes_cache(path: str | Path, boxes: Boxes, meta: dict) -> None:
    """Write ``boxes`` (and their class names, if any) with the ``meta`` they were computed with."""
    data: dict[str, Any] = {"version": VERSION, "meta": meta, "boxes": {k: [*b, s] for k, (b, s) in boxes.items()}}
    labels = getattr(boxes, "labels", None)
    if labels:
        data["labels"] = labels
    atomic_write_json(path, data)


def upgrade_meta(meta: dict) -> dict:
    """A version-1 cache key in the current form.

    Version 1 kept every source's own setting under ``"detector"`` (the name from when only the
    ``detector`` source had one), and wrote ``loc_view`` for ``self`` only when it was not the
    default ``whole``. Version 2 names the setting ``"setting"`` and always writes ``loc_view``
    for ``self``; nothing else changed, so a version-1 file matches the run it was made for.
    """
    out = dict(meta)
    if "detector" in out:
        out["setting"] = out.pop("detector")
    if out.get("source") == "self":
        out.setdefault("loc_view", "whole")
    return out


def load_boxes_cache(path: str | Path, meta: dict) -> FoundBoxes | None:
    """The cached boxes if ``path`` exists and was computed with the same ``meta``; else None.

    An unreadable or foreign file is None too (the caller recomputes and overwrites it). A
    version-1 file whose upgraded key matches is rewritten in the current form.
    """
    p = Path(path)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("meta"), dict) or not isinstance(data.get("boxes"), dict):
        return None
    version = data.get("version", 1)
    stored = upgrade_meta(data["meta"]) if version == 1 else data["meta"]
    if version not in (1, VERSION) or stored != meta:
        return None
    try:
        boxes = FoundBoxes({k: (tuple(map(float, v[:4])), float(v[4])) for k, v in data["boxes"].items()},
                           data.get("labels"))
    except (TypeError, ValueError, IndexError):
        return None
    if version == 1:
        write_boxes_cache(p, boxes, meta)
    return boxes
