#!/usr/bin/env python
"""ViT-B/16 efficiency (random weights): parameters and CPU img/s, frozen vs ICA vs merged ICA.

    python -m benchmarks.vit_efficiency.run --batches 1,32 --repeats 3 --threads 2   # ~2 min on 2 cores
    python -m benchmarks.vit_efficiency.run --render          # docs section from the committed JSON

Writes ``benchmarks/results/vit_efficiency.json`` and the "ViT efficiency" section of
``docs/BENCHMARKS.md``. ``--backbone`` (e.g. ``vit_tiny_patch16_224``) makes a quick smoke run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import _common as C

SECTION = "## ViT efficiency"
DEFAULT_OUT = C.RESULTS / "vit_efficiency.json"


def vit_efficiency(batches: tuple[int, ...] = (1, 32), repeats: int = 3, threads: int = 2, rank: int = 16,
                   name: str = "vit_base_patch16_224") -> dict[str, Any]:
    """Parameters and CPU forward img/s of a random-weight ViT: frozen vs ICA (gelu) vs merged ICA (identity).

    Args:
        batches: batch sizes timed.
        repeats: timed forward passes per variant and batch (after one warm-up).
        threads: torch threads.
        rank: ICA rank on Q and K of every block.
        name: the timm ViT.

    Returns:
        Parameter counts, the merge check and ``speed[variant][batch]`` (median seconds, img/s, every run).
    """
    import torch

    from dva import DVAConfig, build_model, count_parameters
    from dva.ica import merge_ica

    torch.set_num_threads(threads)

    def make(act: str) -> torch.nn.Module:
        cfg = DVAConfig()
        cfg.backbone.name, cfg.backbone.weights = name, "none"
        cfg.ica.rank, cfg.ica.act, cfg.ica.target, cfg.ica.blocks = rank, act, "qk", "all"
        torch.manual_seed(0)
        m = build_model(cfg, 0).eval()
        for n, p in m.named_parameters():  # non-zero "up" weights: the branch really computes
            if ".ica_" in n:
                torch.nn.init.normal_(p, std=0.02)
        return m

    gelu, ident = make("gelu"), make("identity")
    counts = count_parameters(gelu)
    x_all = torch.randn(max(batches), 3, 224, 224)
    with torch.no_grad():
        ref = ident.embed(x_all[:2])
    n_merged = merge_ica(ident.encoder)
    with torch.no_grad():
        merged_err = float((ident.embed(x_all[:2]) - ref).abs().max())
    merged_params = sum(p.numel() for p in ident.encoder.parameters())

    variants: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "frozen": lambda x: gelu.embed(x, adapted=False),
        "ica_gelu": lambda x: gelu.embed(x),
        "ica_merged_identity": lambda x: ident.embed(x),
    }
    table: dict[str, dict[str, Any]] = {k: {} for k in variants}
    with torch.no_grad():
        for fn in variants.values():
            fn(x_all[:1])  # warm-up
        for b in batches:
            x = x_all[:b]
            times: dict[str, list[float]] = {k: [] for k in variants}
            # Variants interleaved within each repeat, so that load drift on a shared machine hits all alike.
            for _ in range(repeats):
                for k, fn in variants.items():
                    t0 = time.perf_counter()
                    fn(x)
                    times[k].append(time.perf_counter() - t0)
            for k, ts in times.items():
                med = sorted(ts)[len(ts) // 2]
                table[k][str(b)] = {"median_s": med, "img_per_s": b / med, "runs_s": ts}
    return {"backbone": name, "weights": "none (random)", "ica": {"rank": rank, "target": "qk", "blocks": "all"},
            "backbone_params": counts["backbone_params"], "adapter_params": counts["adapter_params"],
            "trainable_pct": 100.0 * counts["trainable_fraction"], "merged_layers": n_merged,
            "merged_params": merged_params, "merged_max_abs_diff": merged_err, "threads": threads,
            "repeats": repeats, "speed": table}


def format_vit_table(r: dict[str, Any]) -> str:
    """The markdown table: parameters and img/s of each variant at each batch size."""
    bs = sorted({int(b) for v in r["speed"].values() for b in v})
    labels = {"frozen": ("frozen", f"{r['backbone_params']:,}"),
              "ica_gelu": ("ICA r={} Q/K, gelu".format(r["ica"]["rank"]),
                           f"{r['backbone_params']:,} + {r['adapter_params']:,} ({r['trainable_pct']:.2f}%)"),
              "ica_merged_identity": ("ICA, identity, merged", f"{r['merged_params']:,}")}
    cells = [[lab, par] + [f"{r['speed'][k][str(b)]['img_per_s']:.1f}" for b in bs] for k, (lab, par) in labels.items()]
    return C.md_table(["variant", "parameters"] + [f"img/s @ batch {b}" for b in bs], cells)


def _vit_load(r: dict[str, Any]) -> str:
    la = r.get("loadavg_1m")
    return (f"1-minute load average {la[0]:.1f} before and {la[1]:.1f} after" if la
            else "shared machine, load not recorded")


def vit_overhead_sentence(r: dict[str, Any]) -> str:
    """Time of each variant relative to frozen (medians), against the run-to-run spread of the timings."""
    sp = r["speed"]
    bs = sorted({b for v in sp.values() for b in v}, key=int)
    spread = max(max(x["runs_s"]) / min(x["runs_s"]) - 1.0 for v in sp.values() for x in v.values())
    parts = []
    for b in bs:
        f = sp["frozen"][b]["median_s"]
        parts.append(f"batch {b}: ICA gelu {sp['ica_gelu'][b]['median_s'] / f:.2f}x, merged "
                     f"{sp['ica_merged_identity'][b]['median_s'] / f:.2f}x")
    return (f"Measured time relative to frozen: {'; '.join(parts)}. The largest spread between repeats of one "
            f"variant was {100 * spread:.0f}%: differences smaller than that are noise.")


def markdown(r: dict[str, Any], json_name: str = "benchmarks/results/vit_efficiency.json") -> str:
    """The docs section body: how it was measured, the expected cost, the table."""
    mac = 2 * 12 * 197 * 2 * 768 * r["ica"]["rank"]
    return (f"Generated by `{C.current_command(r['command'])}` on {r['date']} ({r['machine']['cpu_count']} x "
            f"{r['machine']['cpu_model']}, {r['threads']} threads, {_vit_load(r)}; median of {r['repeats']} "
            f"timed forward passes (variants interleaved) after one warm-up; torch {r['machine']['torch']}). `{r['backbone']}` with "
            f"random weights (no accuracy). ICA: rank {r['ica']['rank']} on Q and K of all 12 blocks = "
            f"{r['adapter_params']:,} parameters = {r['trainable_pct']:.2f}% of {r['backbone_params']:,}. "
            f"Merged: {r['merged_layers']} adapters folded into the frozen qkv weights (max |diff| "
            f"{r['merged_max_abs_diff']:.1e} on the embedding). JSON: `{json_name}` "
            f"(every timed run). Expected cost: the gelu branches add 2 x 12 x 197 tokens x 2 x 768 x "
            f"{r['ica']['rank']} multiply-adds = {mac / 1e9:.2f} GMAC per image "
            f"over ViT-B/16's ~17.6 GMAC, i.e. ~{100 * mac / 17.6e9:.1f}%; merged, none. "
            f"{vit_overhead_sentence(r)}\n\n"
            + format_vit_table(r) + "\n")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.vit_efficiency.run``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.vit_efficiency.run",
                                description="ViT-B/16 (random weights) parameters and CPU forward speed with ICA.")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--rank", type=int, default=16, help="ICA rank on Q and K")
    p.add_argument("--backbone", default="vit_base_patch16_224", help="timm ViT (random weights)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--doc", default=str(C.DOC))
    p.add_argument("--no-doc", action="store_true")
    p.add_argument("--render", action="store_true", help="run nothing: rebuild the docs section from --out")
    return p


def main(argv: list[str] | None = None) -> int:
    """Measure (or ``--render``), write the JSON and the docs section; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if args.render:
        r = json.loads(out.read_text())
    else:
        load0 = os.getloadavg()[0]
        r = vit_efficiency(tuple(int(b) for b in args.batches.split(",")), args.repeats, args.threads,
                           args.rank, args.backbone)
        r["loadavg_1m"] = [load0, os.getloadavg()[0]]
        C.write_result(out, r, __file__, argv)
        print(f"wrote {out}")
    print(format_vit_table(r))
    if not args.no_doc:
        C.update_doc(args.doc, SECTION, markdown(r, C.repo_relative(out)))
        print(f"updated {args.doc} ({SECTION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
