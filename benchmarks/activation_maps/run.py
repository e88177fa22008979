#!/usr/bin/env python
"""Where the model looks, frozen vs DVA: the paper's Fig. 4, with a number beside the pictures.

For each trained checkpoint (``--model LABEL=CHECKPOINT``, e.g. the DVA row of the cub100
benchmark for each backbone) the same encoder runs twice on the same images, adapters off
(the frozen backbone) and on (DVA), and ``DVAModel.activation_map`` (docs/METHOD.md, OPA: the
channel-summed last feature map of a CNN, the last block's CLS->patch attention of a ViT) is
overlaid on the image as the model sees it.

* Figure, one PNG per model (``docs/maps_<LABEL>.png``): rows = a few cub100 test-class photos
  (unseen bird species) and a few pets37 photos (another domain, full scenes); columns = the
  model's view, the frozen map, the DVA map.
* Number, on all 370 pets37 photos (their ``body_*`` whole-animal boxes): the share of the map's
  mass inside the animal's box and the pointing game (is the map's peak inside the box?),
  frozen vs DVA. The photos are out of the cub100 training domain, so this asks whether the
  adapters changed where the encoder looks on images it was not adapted to.

    python -m benchmarks.activation_maps.run --model mobilenetv2=runs/demo/last.safetensors \
        --model vit_s14=runs/bench_cub100/vit_s14_dva_s0_168px_2ep/last.safetensors

Writes ``benchmarks/results/activation_maps.json`` and, unless ``--no-doc``, the section
"## Activation maps: frozen vs DVA" of docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import _common as C

SECTION = "## Activation maps: frozen vs DVA"
DEFAULT_OUT = C.RESULTS / "activation_maps.json"


def pets_boxes(root: Path) -> list[tuple[str, tuple[float, float, float, float], tuple[int, int]]]:
    """``(path, body box x1 y1 x2 y2, (width, height))`` of every pets37 photo."""
    out = []
    with open(root / "pets37.csv", newline="") as f:
        for r in csv.DictReader(f):
            box = tuple(float(r[f"body_{k}"]) for k in ("x1", "y1", "x2", "y2"))
            out.append((str(root / r["path"]), box, (int(r["width"]), int(r["height"]))))
    return out


def box_in_view(box: tuple[float, ...], size: tuple[int, int], resize: int, crop: int) -> tuple[float, ...]:
    """A box of the stored image in the model's view: short side resized to ``resize``, centre crop ``crop``."""
    w, h = size
    s = resize / min(w, h)
    ox, oy = (w * s - crop) / 2, (h * s - crop) / 2
    x1, y1, x2, y2 = (box[0] * s - ox, box[1] * s - oy, box[2] * s - ox, box[3] * s - oy)
    return tuple(min(max(v, 0.0), float(crop)) for v in (x1, y1, x2, y2))


def map_in_box(amap: Any, box: tuple[float, ...], crop: int) -> tuple[float, bool]:
    """Share of the map's mass inside ``box`` and whether its peak is inside (map upsampled to the view)."""
    import torch
    import torch.nn.functional as F

    m = F.interpolate(torch.as_tensor(amap, dtype=torch.float32)[None, None], size=(crop, crop), mode="bilinear",
                      align_corners=False)[0, 0].clamp_min(0)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    total = float(m.sum())
    inside = float(m[y1:y2, x1:x2].sum())
    peak = int(torch.argmax(m))
    py, px = divmod(peak, crop)
    return (inside / total if total > 0 else 0.0), (x1 <= px < x2 and y1 <= py < y2)


def cub_samples(root: Path, n: int) -> list[str]:
    """``n`` cub100 test-class photos (classes 50-99), one per evenly spaced class."""
    from dva.data import load_split

    test = load_split("cub100", str(root), "open").test
    classes = sorted({r.label for r in test})
    picked = [classes[round(i * (len(classes) - 1) / max(n - 1, 1))] for i in range(n)]
    return [min(r.path for r in test if r.label == c) for c in picked]


def figure(embedder: Any, paths: list[str], title: str, out: Path) -> None:
    """Rows = images; columns = the model's view, frozen map, DVA map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dva.data import load_rgb
    from dva.retrieval.report import activation_overlays, model_view

    fig, axes = plt.subplots(len(paths), 3, figsize=(6.6, 2.2 * len(paths)))
    for i, p in enumerate(paths):
        img = load_rgb(p)
        ov = activation_overlays(embedder, img)
        for j, (name, im) in enumerate((("input", model_view(embedder.transform, img)), ("frozen", ov["frozen"]),
                                        ("DVA", ov["dva"]))):
            ax = axes[i, j]
            ax.imshow(im)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=10)
        axes[i, 0].set_ylabel(Path(p).parent.name[:18], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def measure(embedder: Any, pets: list, batch: int = 32) -> dict[str, Any]:
    """Mass-in-box and pointing game, frozen vs DVA, over the pets37 photos."""
    import torch

    from dva.data import load_rgb

    tf = embedder.transform
    resize = next(t.size for t in tf.transforms if type(t).__name__ == "Resize")
    crop = embedder.img_size
    stats: dict[str, dict[str, list]] = {k: {"mass": [], "point": []} for k in ("frozen", "dva")}
    for i in range(0, len(pets), batch):
        chunk = pets[i:i + batch]
        x = torch.stack([tf(load_rgb(p)) for p, _, _ in chunk])
        for name, adapted in (("frozen", False), ("dva", True)):
            maps = embedder.activation_maps(x, adapted=adapted).numpy()
            for (p, box, size), m in zip(chunk, maps):
                mass, hit = map_in_box(m, box_in_view(box, size, resize, crop), crop)
                stats[name]["mass"].append(mass)
                stats[name]["point"].append(hit)
    out = {}
    for k, v in stats.items():
        out[k] = {"mass_in_box_mean": statistics.fmean(v["mass"]), "mass_in_box_median": statistics.median(v["mass"]),
                  "pointing": sum(v["point"]) / len(v["point"])}
    # Paired: on how many photos DVA puts more of its map on the animal than the frozen encoder.
    out["dva_more_mass"] = sum(d > f for d, f in zip(stats["dva"]["mass"], stats["frozen"]["mass"])) / len(pets)
    out["images"] = len(pets)
    return out


def box_area_share(pets: list, resize: int, crop: int) -> float:
    """Mean share of the view inside the body box: the mass-in-box of a uniform map."""
    shares = []
    for _, box, size in pets:
        x1, y1, x2, y2 = box_in_view(box, size, resize, crop)
        shares.append(max(0.0, x2 - x1) * max(0.0, y2 - y1) / crop ** 2)
    return statistics.fmean(shares)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    rows = []
    for r in result["models"]:
        s = r["pets37"]
        rows.append([r["label"], r["backbone"], f"{r['img_size']}",
                     f"{100 * s['frozen']['mass_in_box_mean']:.1f}", f"{100 * s['dva']['mass_in_box_mean']:.1f}",
                     f"{100 * s['frozen']['pointing']:.1f}", f"{100 * s['dva']['pointing']:.1f}",
                     f"{100 * s['dva_more_mass']:.1f}", f"{100 * r['uniform_mass']:.1f}"])
    table = C.md_table(["model", "backbone", "px", "mass in box, frozen %", "mass in box, DVA %",
                        "peak in box, frozen %", "peak in box, DVA %", "photos where DVA has more mass in box %",
                        "uniform map %"], rows)
    figs = "\n\n".join(f"![{r['label']}: frozen vs DVA activation maps]({Path(r['figure']).name})"
                       for r in result["models"])
    return (f"`{C.current_command(result['command'])}` ({result['date']}, {m['cpu_count']} x {m['cpu_model']}, "
            f"{result['wall_seconds']:.0f} s) -> `{result['json']}`.\n\n"
            "Each checkpoint is a DVA model trained on cub100 (classes 0-49); the frozen map is the same encoder "
            "with its adapters switched off. Maps: channel sum of the last feature map (CNN), CLS->patch "
            "attention of the last block, mean over heads (ViT), min-max scaled. The numbers are over all 370 "
            "pets37 photos (out of the training domain) against their whole-animal boxes in the model's view "
            "(resize + centre crop): the share of the map's mass inside the box, and how often the map's peak "
            "falls inside it. 'Uniform map' is the share of the view the boxes cover: a map that looks "
            "everywhere scores that.\n\n"
            f"{table}\n\n{figs}\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks.activation_maps.run", description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", required=True, metavar="LABEL=CHECKPOINT",
                    help="a DVA checkpoint; repeat for several backbones")
    ap.add_argument("--cub-images", type=int, default=3)
    ap.add_argument("--pets-images", type=int, default=3)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--fig-dir", default=str(C.REPO / "docs"))
    ap.add_argument("--doc", default=str(C.DOC))
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)

    from dva.checkpoint import load_checkpoint
    from dva.data.locate import find_dataset
    from dva.runtime.torch_embedder import Embedder

    cub = find_dataset("cub100", required=True)
    pets_root = find_dataset("pets37", required=True)
    pets = pets_boxes(pets_root)
    cub_paths = cub_samples(cub, args.cub_images)
    step = max(1, len(pets) // max(args.pets_images, 1))
    pets_paths = [pets[i * step + step // 2][0] for i in range(args.pets_images)]
    t0 = time.time()
    models = []
    for spec in args.model:
        label, _, ckpt = spec.partition("=")
        if not ckpt or not Path(ckpt).is_file():
            raise SystemExit(f"--model {spec}: expected LABEL=CHECKPOINT with an existing .safetensors file")
        model, info = load_checkpoint(ckpt)
        emb = Embedder(model)
        cfg = model.cfg
        fig = Path(args.fig_dir) / f"maps_{label}.png"
        figure(emb, cub_paths + pets_paths, f"{label} ({cfg.backbone.name}, {cfg.backbone.img_size} px): "
               "cub100 unseen species, then pets37", fig)
        resize = next(t.size for t in emb.transform.transforms if type(t).__name__ == "Resize")
        models.append({"label": label, "checkpoint": str(ckpt), "backbone": cfg.backbone.name,
                       "img_size": cfg.backbone.img_size, "figure": C.repo_relative(fig),
                       "pets37": measure(emb, pets), "uniform_mass": box_area_share(pets, resize, emb.img_size)})
        print(label, models[-1]["pets37"], flush=True)
    out = Path(args.out)
    result = {"benchmark": "activation_maps", **C.provenance(__file__, argv), "wall_seconds": time.time() - t0,
              "json": C.repo_relative(out), "cub_images": cub_paths, "pets_images": pets_paths, "models": models}
    for p in ("cub_images", "pets_images"):
        result[p] = [str(Path(x).relative_to(Path(x).parents[2])) for x in result[p]]
    C.write_json(out, result)
    print(markdown(result))
    if not args.no_doc:
        C.update_doc(args.doc, SECTION, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
