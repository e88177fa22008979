#!/usr/bin/env python
"""The frontier sweep's networks on torch against onnxruntime, side by side in one process.

Times, on one batch of random images at each bundled backbone's input size with adapters of the
frontier's placement (random adapter weights, scale 0.5): the frozen prefix (``DVAModel.prefix``
against :class:`dva.runtime.frozen.OnnxFrozenRunner`), the adapted suffix of one alpha
(``embed_from_prefix`` against the graph of ``export_suffix``) and a whole model (``embed`` against
``export_onnx``), medians of ``--repeats`` after one warm-up run each; the export seconds; the
largest difference of the embeddings. From the repository root:

    python -m benchmarks.frontier.runtime_speed            # MobileNetV2 and Lite2; writes the JSON
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import _common as C

OUT = C.RESULTS / "frontier_runtime_speed.json"  # beside, not in, results/frontier/ (the profiles' JSONs)
# backbone preset -> the adapter blocks of the frontier's placement on it (the select profiles' choices
# on cars196 / aircraft47: the last two stages of MobileNetV2, the last four of Lite2), rank 8
CASES = {"mobilenetv2": "-2:", "lite2": "-4:"}


def _median_seconds(f: Callable[[], Any], repeats: int) -> float:
    f()  # warm-up: kernel plans, session start
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(preset: str, blocks: str, batch: int, repeats: int, threads: int) -> dict[str, Any]:
    """One backbone's three networks on both runtimes."""
    import numpy as np
    import torch

    from dva import build_model
    from dva.config import load_config
    from dva.runtime.frozen import OnnxFrozenRunner
    from dva.runtime.onnx_embedder import SplitSessions
    from dva.runtime.onnx_export import export_onnx, export_suffix
    from dva.runtime.torch_embedder import Embedder

    torch.manual_seed(0)
    model = build_model(load_config(preset, ["--ica.blocks", f"'{blocks}'", "--ica.rank", "8"]), 0).eval()
    for p in model.adapter_parameters():
        p.data.normal_(0, 0.05)  # trained-like adapters (zero-initialised ones would be folded away)
    model.set_ica_scale(0.5)
    size = model.cfg.backbone.img_size
    x = torch.randn(batch, 3, size, size)
    folder = Path(tempfile.mkdtemp(prefix="dva_runtime_speed_"))
    t0 = time.perf_counter()
    export_suffix(Embedder(model), model.split, folder / "suffix.onnx")
    suffix_export = time.perf_counter() - t0
    t0 = time.perf_counter()
    export_onnx(Embedder(model), folder / "model.onnx")
    model_export = time.perf_counter() - t0
    suffix, whole = SplitSessions(folder / "suffix.onnx", threads), SplitSessions(folder / "model.onnx", threads)
    frozen = OnnxFrozenRunner(model, "cpu", threads)
    with torch.no_grad():
        h = model.prefix(x)
        a, xa = np.ascontiguousarray(h.numpy()), x.numpy()
        rows = {
            "prefix": (lambda: model.prefix(x), lambda: frozen.prefix(x),
                       float((frozen.prefix(x) - h).abs().max())),
            "suffix": (lambda: model.embed_from_prefix(h, normalize=True), lambda: suffix.run(a),
                       float(np.abs(suffix.run(a) - model.embed_from_prefix(h, normalize=True).numpy()).max())),
            "whole": (lambda: model.embed(x), lambda: whole.run(xa),
                      float(np.abs(whole.run(xa) - model.embed(x).numpy()).max())),
        }
        out = {}
        for name, (tf, of, diff) in rows.items():
            ts, os_ = _median_seconds(tf, repeats), _median_seconds(of, repeats)
            out[name] = {"torch_s": ts, "onnx_s": os_, "ratio": ts / os_, "max_abs_diff": diff}
    frozen.close()
    suffix.close()
    whole.close()
    return {"model": model.cfg.backbone.name, "img_size": size, "blocks": blocks, "split": model.split,
            "batch": batch, "suffix_export_s": suffix_export, "model_export_s": model_export, "networks": out}


def table(res: dict[str, Any]) -> str:
    rows = [[bb, f"{r['model']} {r['img_size']} px", name, f"{n['torch_s']:.2f}", f"{n['onnx_s']:.2f}",
             f"{n['ratio']:.1f}x", f"{n['max_abs_diff']:.1e}"]
            for bb, r in res["backbones"].items() for name, n in r["networks"].items()]
    return C.md_table(["backbone", "model", f"network ({res['batch']} images)", "torch s", "onnx s", "torch / onnx",
                       "max |diff|"], rows, "lllrrrr")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.frontier.runtime_speed", description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", default=",".join(CASES), help=f"comma-separated, of {list(CASES)}")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    names = [b for b in args.backbones.split(",") if b]
    unknown = [b for b in names if b not in CASES]
    if unknown:
        ap.error(f"unknown backbone(s) {unknown}; of {list(CASES)}")
    res: dict[str, Any] = {"batch": args.batch, "repeats": args.repeats, "threads": args.threads,
                           "backbones": {b: measure(b, CASES[b], args.batch, args.repeats, args.threads)
                                         for b in names}}
    C.write_result(args.out, res, __file__, sys.argv[1:] if argv is None else argv, ("torch", "timm", "onnxruntime"))
    print(table(res))
    print(f"wrote {C.repo_relative(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
