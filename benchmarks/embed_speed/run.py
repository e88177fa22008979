#!/usr/bin/env python
"""Speed of ``dva embed`` on real cub100 photos, decode included: torch eager, torch channels_last,
onnxruntime, and 2 processes under torchrun; each with its forward-only ceiling.

Model: the bundled ImageNet MobileNetV2 at 224 px with the default DVA adapters (an untrained
``build_model(DVAConfig(), 50)`` saved as a checkpoint: speed does not depend on the adapter
values); then the other bundled backbones (``--backbones``) on the onnxruntime default. Every
``dva embed`` run is a fresh process with the command's defaults (batch 64,
decoding in the model's process with the next batch in a thread, torch's thread count = the cores, ``OMP_NUM_THREADS=1``
per process under torchrun); img/s is what the command itself reports (images / seconds from the
start of the embedding to the last shard written: model loading not included). Variants take
turns within each repeat, so a change in the machine's load hits them all; medians over
``--repeats``. Forward-only: preprocessed tensors through the model alone, batch 64, median over
repeats (the 2-process ceiling is twice the one-thread figure). Also: the cosine of every variant's
vectors to torch channels_last, whether torchrun wrote the same bytes as one process, the JPEG
decode + resize rate, and what ``--jpeg-draft`` does to large JPEGs.

Usage::

    python -m benchmarks.embed_speed.run                          # ~3-5 min on 2 cores
    python -m benchmarks.embed_speed.run --images 128 --repeats 1 --no-doc --out /tmp/e.json   # smoke

Writes ``benchmarks/results/embed_speed.json`` and, unless ``--no-doc``, the section
"## Embedding speed" of docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _common as C

SECTION = "## Embedding speed"
DEFAULT_OUT = C.RESULTS / "embed_speed.json"
BUSY = 2.5  # 1-minute load average above which the doc says the numbers are pessimistic
VARIANTS = {  # name -> (description, runtime, processes)
    "torch_eager": ("torch eager (NCHW)", "torch", 1),
    "torch_channels_last": ("torch channels_last (the torch runtime)", "torch", 1),
    "onnx": ("onnxruntime (`--runtime onnx`, the default; decode in a thread)", "onnx", 1),
    "onnx_worker": ("onnxruntime, `--workers 1` (decode in a worker process)", "onnx", 1),
    "torchrun_2x1": ("onnxruntime, 2 processes under torchrun, 1 thread each", "onnx", 2),
}

# `dva embed` with the CNN left in NCHW: dva.backbone converts CNNs (and their input) to
# channels_last; this undoes exactly that and nothing else.
_EAGER = r"""
import sys, torch
import dva.backbone as bb
_create, _prefix = bb.create_backbone, bb.forward_prefix
def create_backbone(*a, **k):
    return _create(*a, **k).to(memory_format=torch.contiguous_format)
def forward_prefix(model, x, start):
    if hasattr(model, "conv_stem"):  # dva.backbone.forward_prefix without the channels_last conversion
        x = model.bn1(model.conv_stem(x.contiguous()))
        for blk in bb.stages(model)[:start]:
            x = blk(x)
        return x
    return _prefix(model, x, start)
bb.create_backbone, bb.forward_prefix = create_backbone, forward_prefix
from dva_cli.cli import main
sys.exit(main(sys.argv[1:]))
"""


# Other bundled backbones (--backbones): `dva embed` on onnxruntime (the default) and the forward-only
# ceiling, each at its own input size with its family's default adapters.
BACKBONES = {  # name -> (timm model, input size, label)
    "lite2": ("tf_efficientnet_lite2", 260, "EfficientNet-Lite2, 260 px"),
    "vit_s14": ("vit_small_patch14_dinov2", 224, "DINOv2 ViT-S/14, 224 px"),
}


def make_checkpoint(path: Path, backbone: str = "mobilenetv2_100", img_size: int = 224) -> Path:
    """The default DVA adapters on a bundled backbone, untrained, as a checkpoint."""
    from dva import DVAConfig, build_model
    from dva.checkpoint import save_checkpoint

    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.img_size = backbone, img_size
    save_checkpoint(path, build_model(cfg, 50))
    return path


def other_backbones(names: list[str], images: Path, n: int, paths: list[str], work: Path, repeats: int,
                    batch: int, shard: int) -> dict[str, Any]:
    """`dva embed` img/s (onnxruntime, defaults) and the forward-only ceiling of each other backbone."""
    import torch

    from dva.runtime.load import load_embedder

    out: dict[str, Any] = {}
    for name in names:
        model, size, label = BACKBONES[name]
        ckpt = make_checkpoint(work / f"{name}.safetensors", model, size)
        onnx = load_embedder(checkpoint=str(ckpt), runtime="onnx")  # exported once, outside the timing
        runs = [run_embed("onnx", ckpt, images, work / f"emb_{name}_{r}", n, batch, shard) for r in range(repeats)]
        x = torch.stack([onnx.transform(_decode(p)) for p in paths])
        onnx.embed_tensor(x[:batch])
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for s in range(0, len(x), batch):
                onnx.embed_tensor(x[s:s + batch])
            times.append(time.perf_counter() - t0)
        out[name] = {"label": label, "model": model, "img_size": size, "runs": runs,
                     "embed_img_per_s": statistics.median(r["img_per_s"] for r in runs),
                     "forward_img_per_s": len(x) / statistics.median(times)}
        print(f"{label:<28} {out[name]['embed_img_per_s']:7.1f} img/s (forward {out[name]['forward_img_per_s']:.1f})",
              flush=True)
    return out


def embed_command(variant: str, ckpt: Path, images: Path, out: Path, batch: int, shard: int) -> tuple[list[str], dict]:
    """The command line and environment of one ``dva embed`` run."""
    _, runtime, procs = VARIANTS[variant]
    args = ["embed", "--checkpoint", str(ckpt), "--images", str(images), "--out", str(out), "--runtime", runtime,
            "--batch-size", str(batch), "--shard-size", str(shard), "--no-progress"]
    if variant == "onnx_worker":
        args += ["--workers", "1"]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if variant == "torch_eager":
        return [sys.executable, "-c", _EAGER, *args], env
    if procs > 1:
        env["OMP_NUM_THREADS"] = "1"
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
                "-m", "dva_cli", *args], env
    return [sys.executable, "-m", "dva_cli", *args], env


def run_embed(variant: str, ckpt: Path, images: Path, out: Path, n: int, batch: int, shard: int) -> dict[str, Any]:
    """One ``dva embed`` run: img/s as the command reports it, wall time of the whole process, load."""
    cmd, env = embed_command(variant, ckpt, images, out, batch, shard)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{variant}: exit {r.returncode}\n{r.stderr[-3000:]}")
    m = re.search(r"computed now, ([0-9.]+)s", r.stdout)
    if m is None:
        raise RuntimeError(f"{variant}: no timing in the output:\n{r.stdout}")
    seconds = float(m.group(1))
    return {"seconds": seconds, "img_per_s": n / seconds, "process_wall_s": round(wall, 2),
            "load_1min": os.getloadavg()[0]}


def forward_only(ckpt: Path, paths: list[str], repeats: int, batch: int) -> dict[str, Any]:
    """img/s of the model alone on preprocessed cub100 photos, and the vectors (for the cosines)."""
    import torch

    from dva.runtime.load import load_embedder, onnx_embedder_for
    from dva.runtime.onnx_embedder import OnnxEmbedder

    torch.set_num_threads(os.cpu_count() or 2)
    cl = load_embedder(checkpoint=str(ckpt), runtime="torch")
    x = torch.stack([cl.transform(_decode(p)) for p in paths])
    onnx = onnx_embedder_for(cl)
    eager = load_embedder(checkpoint=str(ckpt), runtime="torch")
    eager.model.to(memory_format=torch.contiguous_format)
    models = {"torch_eager": (eager, lambda b: _eager_embed(eager, b)), "torch_channels_last": (cl, cl.embed_tensor),
              "onnx": (onnx, onnx.embed_tensor)}
    one_thread = OnnxEmbedder(onnx.path, threads=1)
    models["onnx_1_thread"] = (one_thread, one_thread.embed_tensor)
    # The same graph without the export's BatchNorm fold (dva.runtime.onnx_export.fold_adapter_norms), one thread.
    from dva.runtime.onnx_export import export_onnx

    unfolded_path = Path(onnx.path).with_name("unfolded.onnx")
    export_onnx(cl, unfolded_path, fold=False)
    unfolded = OnnxEmbedder(unfolded_path, threads=1)
    models["onnx_1_thread_unfolded"] = (unfolded, unfolded.embed_tensor)
    out: dict[str, Any] = {"images": len(paths), "batch": batch, "threads": torch.get_num_threads()}
    for name, (_, fn) in models.items():
        fn(x[:batch])  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            vecs = torch.cat([fn(x[s:s + batch]) for s in range(0, len(x), batch)])
            times.append(time.perf_counter() - t0)
        out[name] = {"img_per_s": len(x) / statistics.median(times), "runs_s": times, "vectors": vecs.numpy()}
    return out


def _eager_embed(embedder: Any, x: Any) -> Any:
    import torch
    import torch.nn.functional as F

    m = embedder.model
    with torch.no_grad():  # as DVAModel.embed, without the channels_last input conversion
        h = m.encoder.bn1(m.encoder.conv_stem(x.contiguous()))
        from dva import backbone as bb

        return F.normalize(m._project(bb.pool(m.encoder, bb.forward_suffix(m.encoder, h, 0))), dim=-1)


def _decode(path: str) -> Any:
    from dva.retrieval.store import load_image_strict

    return load_image_strict(path)


def decode_rate(paths: list[str], transform: Any) -> float:
    """Decode + resize + crop + normalise, one process, one thread: images per second."""
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    for p in paths:
        transform(_decode(p))
    rate = len(paths) / (time.perf_counter() - t0)
    torch.set_num_threads(os.cpu_count() or 2)
    return rate


def jpeg_draft_check(ckpt: Path, paths: list[str], work: Path) -> dict[str, Any]:
    """``--jpeg-draft`` on large JPEGs: cosine to the full decode, and the decode time of both.

    cub100 photos are 227 px (draft never applies), so large JPEGs are made from them (upscaled
    4x / 16x, sensor-like noise added, quality 92), plus the pets37 photos with a short side >= 1024.
    """
    import numpy as np
    from PIL import Image

    from dva.data import find_dataset
    from dva.runtime.load import load_embedder
    from dva.retrieval.store import draft_side as _draft_side, load_image_strict

    rng = np.random.default_rng(0)
    files = []
    for i, p in enumerate(paths[:: max(1, len(paths) // 8)][:8]):
        im = Image.open(p).convert("RGB")
        for up in (4, 16):
            big = np.asarray(im.resize((im.width * up, im.height * up), Image.BICUBIC), dtype=np.float32)
            big = np.clip(big + rng.normal(0, 4, big.shape), 0, 255).astype(np.uint8)
            f = work / f"big_{i}_{up}.jpg"
            Image.fromarray(big).save(f, quality=92)
            files.append(str(f))
    pets = find_dataset("pets37")
    if pets is not None:
        files += [str(p) for p in sorted((pets / "images").rglob("*.jpg")) if min(Image.open(p).size) >= 1024]
    emb = load_embedder(checkpoint=str(ckpt), runtime="torch")
    side = _draft_side(emb.transform)
    res: dict[str, Any] = {"images": len(files), "draft_min_side": side}
    for name, draft in (("full", None), ("draft", side)):
        t0 = time.perf_counter()
        ims = [load_image_strict(f, draft) for f in files]
        res[f"{name}_decode_ms"] = 1000 * (time.perf_counter() - t0) / len(files)
        res[f"{name}_vectors"] = emb.embed_pil(ims)
    cos = (res.pop("full_vectors") * res.pop("draft_vectors")).sum(1)
    res["min_cosine"], res["median_cosine"] = float(cos.min()), float(np.median(cos))
    return res


def cosines(dirs: dict[str, Path], forward: dict[str, Any]) -> dict[str, Any]:
    """Min cosine of each variant's vectors to torch channels_last, and torchrun vs one process."""
    import numpy as np

    from dva.retrieval.store import load_embeddings

    ref = load_embeddings(dirs["torch_channels_last"]).vectors
    out: dict[str, Any] = {"embed": {}, "forward": {}}
    for v, d in dirs.items():
        out["embed"][v] = float((load_embeddings(d).vectors * ref).sum(1).min())
    fref = forward["torch_channels_last"]["vectors"]
    for v in ("torch_eager", "onnx", "onnx_1_thread", "onnx_1_thread_unfolded"):
        out["forward"][v] = float((forward[v]["vectors"] * fref).sum(1).min())
    if "torchrun_2x1" in dirs and "onnx" in dirs:
        a, b = (sorted((dirs[v] / "shards").glob("*.npy")) for v in ("onnx", "torchrun_2x1"))
        out["torchrun_same_bytes_as_onnx_2_threads"] = all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
        out["torchrun_vs_onnx_max_abs_diff"] = float(np.abs(load_embeddings(dirs["onnx"]).vectors
                                                            - load_embeddings(dirs["torchrun_2x1"]).vectors).max())
    return out


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Everything: setup, the ``dva embed`` runs (variants in turn per repeat), forward-only, checks."""
    from dva.data import find_dataset
    from dva.runtime.load import load_embedder

    root = find_dataset("cub100", required=True)
    paths = [str(p) for p in sorted((root / "images").rglob("*.jpg"))][: args.images]
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["DVA_CACHE"] = str(work / "cache")  # the ONNX export is made (and timed) here
        images = work / "images.txt"
        images.write_text("".join(p + "\n" for p in paths))
        ckpt = make_checkpoint(work / "dva.safetensors")
        t0 = time.perf_counter()
        load_embedder(checkpoint=str(ckpt), runtime="onnx")
        export_s = time.perf_counter() - t0
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        dirs = {}
        for rep in range(args.repeats):
            for v in variants:
                dirs[v] = work / f"emb_{v}_{rep}"
                runs[v].append(run_embed(v, ckpt, images, dirs[v], len(paths), args.batch_size, args.shard_size))
                print(f"[{rep + 1}/{args.repeats}] {v:<22} {runs[v][-1]['img_per_s']:7.1f} img/s "
                      f"(load {runs[v][-1]['load_1min']:.1f})", flush=True)
        forward = forward_only(ckpt, paths[: args.forward_images], args.repeats, args.batch_size)
        decode = decode_rate(paths, load_embedder(checkpoint=str(ckpt), runtime="torch").transform)
        equal = cosines(dirs, forward)
        draft = jpeg_draft_check(ckpt, paths, work)
        others = other_backbones([b for b in args.backbones.split(",") if b], images, len(paths),
                                 paths[: args.forward_images], work, args.repeats, args.batch_size, args.shard_size)
    for v in ("torch_eager", "torch_channels_last", "onnx", "onnx_1_thread", "onnx_1_thread_unfolded"):
        forward[v].pop("vectors")
    return {"variants": variants, "runs": runs, "export_seconds": round(export_s, 1),
            "embed_img_per_s": {v: statistics.median(r["img_per_s"] for r in runs[v]) for v in variants},
            "forward": forward, "decode_img_per_s_one_core": decode, "cosine": equal, "jpeg_draft": draft,
            "backbones": others,
            "images": len(paths), "dataset": str(root)}


def ceiling(result: dict[str, Any], variant: str) -> float:
    f = result["forward"]
    return {"torch_eager": f["torch_eager"]["img_per_s"], "torch_channels_last": f["torch_channels_last"]["img_per_s"],
            "onnx": f["onnx"]["img_per_s"], "onnx_worker": f["onnx"]["img_per_s"],
            "torchrun_2x1": 2 * f["onnx_1_thread"]["img_per_s"]}[variant]


def markdown(result: dict[str, Any]) -> str:
    """The docs section: how it was run, the table, the checks."""
    m, load = result["machine"], result["load_1min"]
    busy = max(load["before"], load["max"]) > BUSY
    rows = []
    for v in result["variants"]:
        cos = result["cosine"]["embed"].get(v)
        rows.append([VARIANTS[v][0], f"{result['embed_img_per_s'][v]:.0f}", f"{ceiling(result, v):.0f}",
                     "reference" if v == "torch_channels_last" else f"{cos:.7f}"])
    for b in result.get("backbones", {}).values():
        rows.append([f"{b['label']}: onnxruntime (the default)", f"{b['embed_img_per_s']:.0f}",
                     f"{b['forward_img_per_s']:.0f}", "-"])
    table = C.md_table(["runtime", "`dva embed` img/s (decode included)", "forward-only img/s (ceiling)",
                        "min cosine to torch channels_last"], rows, "lrrr")
    d, c = result["jpeg_draft"], result["cosine"]
    text = (f"How fast `dva embed` turns photos into vectors. Script: `benchmarks/embed_speed/run.py`; raw "
            f"results: `benchmarks/results/embed_speed.json`.\n\n```\n{C.current_command(result['command'])}\n```\n\n"
            f"{result['date']}, {m.get('cpu_count')} CPU cores ({m.get('cpu_model') or m.get('processor')}), "
            f"torch {m.get('torch')}, onnxruntime {m.get('onnxruntime')}; 1-minute load average "
            f"{load['before']:.1f} before the run, up to {load['max']:.1f} during it.\n\n")
    if busy:
        text += (f"**The machine was busy (load average above {BUSY}) during this run: other jobs shared the "
                 "cores, so every number below is pessimistic, and the gaps between variants are noisier "
                 "than on an idle machine. To be rerun on the idle machine.**\n\n")
    text += (f"{result['images']} cub100 photos (227 x 227 JPEG), bundled MobileNetV2 at 224 px with the default "
             "DVA adapters (GELU, rank 16, beside pw+pwl+head of the last two stages; untrained: speed does not "
             "depend on the values). `dva embed` runs with its defaults: batch "
             f"{result['settings']['batch_size']}, shards of {result['settings']['shard_size']} images (whole "
             "shards per process under torchrun), decoding in this process with the next batch in a thread "
             "(`--workers 0`, the default), torch threads = cores (onnxruntime: as many threads, each batch split "
             "between them, one thread per part; adapters exported with their BatchNorm folded in). The other "
             "bundled backbones (last rows) run the onnxruntime default with their own default adapters (rank 16; "
             "the ViT: Q/K in every block). img/s = images / embedding time "
             "as the command reports it (model loading excluded), median of "
             f"{result['settings']['repeats']} runs, the variants taking turns. Forward-only = preprocessed "
             f"tensors through the model alone ({result['forward']['images']} photos, batch "
             f"{result['forward']['batch']}); for 2 processes, twice the one-thread figure.\n\n{table}\n\n"
             f"- Decode + resize + crop + normalise of these photos: "
             f"{result['decode_img_per_s_one_core']:.0f} img/s on one core.\n"
             f"- Forward-only on one thread, the export's BatchNorm fold (docs/METHOD.md, Inference) on vs "
             f"off: {result['forward']['onnx_1_thread']['img_per_s']:.0f} vs "
             f"{result['forward']['onnx_1_thread_unfolded']['img_per_s']:.0f} img/s.\n"
             f"- One-time ONNX export into the cache (first `--runtime onnx` use of a model): "
             f"{result['export_seconds']:.0f} s.\n"
             f"- Forward-only, min cosine to torch channels_last: eager {c['forward']['torch_eager']:.7f}, "
             f"onnxruntime {c['forward']['onnx']:.7f}.\n")
    if "torchrun_same_bytes_as_onnx_2_threads" in c:
        text += (f"- torchrun (1 thread per process) vs one process with 2 threads: same bytes: "
                 f"{'yes' if c['torchrun_same_bytes_as_onnx_2_threads'] else 'no'} (max abs difference "
                 f"{c['torchrun_vs_onnx_max_abs_diff']:.1e}; with the same thread count per process the "
                 "vectors are bit-identical, tests/retrieval/test_world.py and tests/cli/test_export_cli.py).\n")
    text += (f"- `--jpeg-draft` (off by default) on {d['images']} large JPEGs (cub100 photos upscaled 4x/16x with "
             f"noise, and pets37 photos with a short side >= 1024): decode {d['full_decode_ms']:.0f} -> "
             f"{d['draft_decode_ms']:.0f} ms per image, but min cosine to the full decode "
             f"{d['min_cosine']:.5f} (median {d['median_cosine']:.6f}): below the 0.99999 equality target, so "
             "it stays opt-in.\n")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.embed_speed.run``."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.embed_speed.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=512, help="cub100 photos embedded per run (default 512)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64, help="`dva embed --batch-size` (default 64, its default)")
    ap.add_argument("--shard-size", type=int, default=64,
                    help="`dva embed --shard-size` (default 64: 8 shards of 512 photos, so 2 processes share them)")
    ap.add_argument("--forward-images", type=int, default=128, help="photos for the forward-only figures")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {','.join(VARIANTS)}")
    ap.add_argument("--backbones", default=",".join(BACKBONES),
                    help=f"other bundled backbones, comma-separated from {','.join(BACKBONES)} ('' for none)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/BENCHMARKS.md")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    before = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = bench(args)
    loads = [r["load_1min"] for rs in result["runs"].values() for r in rs] + [os.getloadavg()[0]]
    result["load_1min"] = {"before": before, "max": max(loads), "after": os.getloadavg()[0]}
    result["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    result = C.write_result(args.out, result, __file__, argv, ("torch", "onnxruntime", "timm", "PIL"))
    print("\n" + markdown(result))
    if not args.no_doc:
        C.update_doc(C.DOC, SECTION, markdown(result))
    print(f"wrote {args.out} ({result['total_seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
