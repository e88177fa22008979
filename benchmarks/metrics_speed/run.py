#!/usr/bin/env python
"""Speed and peak memory of ``dva.metrics.retrieval_metrics`` vs pytorch-metric-learning.

Leave-one-out Recall@1 / MAP@R / R-Precision on synthetic clustered 768-d embeddings
(classes of ~50 images, like CUB). Each (implementation, size) runs in its own subprocess so
that peak RSS (``ru_maxrss``) is its own; "above inputs" is the peak minus the RSS measured
after the embeddings were generated (i.e. the metric's working memory, including any copy
of the inputs it makes). pytorch-metric-learning runs ``AccuracyCalculator(k="max_bin_count")``
with its default faiss ``IndexFlatL2`` k-NN on L2-normalised inputs (the same ranking as
cosine).

Usage::

    python -m benchmarks.metrics_speed.run                   # 10k, 50k, 200k (~15 min, 2 cores)
    python -m benchmarks.metrics_speed.run --sizes 2000 --repeats 2 --out /tmp/x.json   # smoke run
    python -m benchmarks.metrics_speed.run --sizes 200000 --impls ours --probe-queries 1000 \
        --out benchmarks/results/metrics_memory_probe.json     # memory only, ~1 min

Writes a table to stdout and JSON to ``benchmarks/results/metrics_speed.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks import _common as C

DEFAULT_OUT = C.RESULTS / "metrics_speed.json"
PACKAGES = ("torch", "numpy", "faiss", "pytorch_metric_learning")  # versions recorded in "machine"


def make_embeddings(n: int, dim: int, class_size: int, noise: float, seed: int) -> tuple[Any, Any]:
    """Clustered float32 embeddings, generated in blocks to keep the peak at ~1x the data."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_cls = max(2, n // class_size)
    centers = rng.standard_normal((n_cls, dim), dtype=np.float32)
    labels = rng.integers(0, n_cls, n)
    x = np.empty((n, dim), np.float32)
    for s in range(0, n, 8192):
        e = min(n, s + 8192)
        x[s:e] = centers[labels[s:e]] + noise * rng.standard_normal((e - s, dim), dtype=np.float32)
    return x, labels


def child(args: argparse.Namespace) -> None:
    """Run one implementation on one size; print one JSON line."""
    import psutil
    import torch

    torch.set_num_threads(args.threads)
    x, y = make_embeddings(args.n, args.dim, args.class_size, args.noise, args.seed)
    if args.impl == "pml":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r",
                                           "r_precision"), k="max_bin_count",
                                  device=torch.device("cpu"))
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def run() -> dict[str, Any]:
            r = calc.get_accuracy(torch.nn.functional.normalize(xt, dim=1), yt)
            return {"recall@1": r["precision_at_1"], "map@r": r["mean_average_precision_at_r"],
                    "r_precision": r["r_precision"]}
    elif args.probe_queries:
        from dva.metrics import retrieval_metrics

        def run() -> dict[str, Any]:  # same chunk sizes and memory as leave-one-out, a fraction of the time
            q = args.probe_queries
            return retrieval_metrics(x[:q], y[:q], ks=(1, 2, 4, 8), gallery_embeddings=x,
                                     gallery_labels=y)
    else:
        from dva.metrics import retrieval_metrics

        def run() -> dict[str, Any]:
            return retrieval_metrics(x, y, ks=(1, 2, 4, 8))

    base_rss = psutil.Process().memory_info().rss
    times, cpu, res = [], [], {}
    for _ in range(args.repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        res = run()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # all threads; less sensitive to machine load
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"times_s": times, "cpu_s": cpu, "peak_rss_bytes": peak,
                      "inputs_rss_bytes": base_rss, "metrics": res}))


def fmt_mb(b: float | None) -> str:
    """Bytes as whole MiB with thousands separators; ``-`` for None."""
    return "-" if b is None else f"{b / 2**20:,.0f}"


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.metrics_speed.run`` (and of its child processes)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.metrics_speed.run", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,50000,200000")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--class-size", type=int, default=50)
    p.add_argument("--noise", type=float, default=3.5,
                   help="noise std around class centres (3.5: R@1 ~0.73 at 10k)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="runs per size <= --repeat-max-n")
    p.add_argument("--repeat-max-n", type=int, default=10000,
                   help="larger sizes run once (they take minutes on 2 cores)")
    p.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 16))
    p.add_argument("--timeout", type=float, default=3000, help="seconds per subprocess")
    p.add_argument("--pml-max-seconds", type=float, default=240,
                   help="skip pml where its time extrapolated (x N^2) from a smaller size "
                        "exceeds this")
    p.add_argument("--impls", default="ours,pml")
    p.add_argument("--probe-queries", type=int, default=0,
                   help="memory probe: only the first Q embeddings query the whole set "
                        "(gallery mode; same per-chunk memory as leave-one-out, ~N/Q x faster; "
                        "the query itself is among its neighbours, so metrics differ)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    # child mode
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    return p


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table (one line per implementation and size; skipped ones say why)."""
    cells = []
    for r in rows:
        name = "dva.metrics" if r["impl"] == "ours" else "pml AccuracyCalculator"
        if "skipped" in r:
            cells.append([f"{r['n']:,}", name, f"skipped: {r['skipped']}"] + [""] * 7)
            continue
        m = r["metrics"]
        diff = r.get("max_abs_diff_vs_other")
        cpu_s = r.get("median_cpu_s")
        cells.append([f"{r['n']:,}", name, f"{r['median_s']:.2f}", "-" if cpu_s is None else f"{cpu_s:.1f}",
                      r["repeats"], fmt_mb(r["peak_rss_bytes"]), fmt_mb(r["above_inputs_bytes"]),
                      f"{m['recall@1']:.4f}", f"{m['map@r']:.4f}", "-" if diff is None else f"{diff:.1e}"])
    return C.md_table(["N", "implementation", "wall time (s)", "CPU time (s)", "runs", "peak RSS (MB)",
                       "RSS above inputs (MB)", "R@1", "MAP@R", "max abs diff ours vs pml"], cells, "rlrrrrrrrr")


def main(argv: list[str] | None = None) -> int:
    """Run every (implementation, size) in its own subprocess; print the table, write the JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.child:
        child(args)
        return 0

    sizes = [int(s) for s in args.sizes.split(",")]
    impls = args.impls.split(",")
    env = C.child_env()  # the child finds the benchmarks package, and dva in this checkout (src/ first)
    env["PYTHONPATH"] = os.pathsep.join([str(C.REPO / "src"), env["PYTHONPATH"]])
    rows = []
    load_start = os.getloadavg()
    last_time: dict[str, tuple[int, float]] = {}
    for n in sizes:
        for impl in impls:
            reps = args.repeats if n <= args.repeat_max_n else 1
            row = {"n": n, "dim": args.dim, "impl": impl, "repeats": reps,
                   "mode": (f"probe: {args.probe_queries} queries vs {n} gallery"
                            if args.probe_queries else "leave-one-out")}
            if impl == "pml" and impl in last_time:
                n0, t0 = last_time[impl]
                est = t0 * (n / n0) ** 2
                if est > args.pml_max_seconds:
                    row["skipped"] = (f"estimated {est:,.0f} s (= {t0:.1f} s at {n0:,} x "
                                      f"({n:,}/{n0:,})^2) exceeds --pml-max-seconds "
                                      f"{args.pml_max_seconds:.0f}")
                    rows.append(row)
                    print(f"{n:>8,} {impl:<5} skipped: {row['skipped']}", flush=True)
                    continue
            cmd = C.child_command(__file__, "--child", "--impl", impl, "--n", str(n),
                                  "--dim", str(args.dim), "--class-size", str(args.class_size),
                                  "--noise", str(args.noise), "--seed", str(args.seed), "--repeats", str(reps),
                                  "--threads", str(args.threads), "--probe-queries", str(args.probe_queries))
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                   env=env, check=False)
            except subprocess.TimeoutExpired:
                row["skipped"] = f"timeout after {args.timeout:.0f} s"
                rows.append(row)
                print(f"{n:>8,} {impl:<5} skipped: {row['skipped']}", flush=True)
                continue
            if r.returncode != 0:
                row["skipped"] = f"failed (exit {r.returncode}): {r.stderr.strip()[-300:]}"
                rows.append(row)
                print(f"{n:>8,} {impl:<5} {row['skipped']}", flush=True)
                continue
            res = json.loads(r.stdout.strip().splitlines()[-1])
            row.update(res)
            row["median_s"] = statistics.median(res["times_s"])
            row["median_cpu_s"] = statistics.median(res["cpu_s"]) if "cpu_s" in res else None
            row["above_inputs_bytes"] = res["peak_rss_bytes"] - res["inputs_rss_bytes"]
            last_time[impl] = (n, row["median_s"])
            rows.append(row)
            m = res["metrics"]
            print(f"{n:>8,} {impl:<5} {row['median_s']:8.2f} s  peak {fmt_mb(res['peak_rss_bytes'])}"
                  f" MB  (+{fmt_mb(row['above_inputs_bytes'])} MB)  R@1 {m['recall@1']:.4f}"
                  f"  MAP@R {m['map@r']:.4f}", flush=True)

    # agreement between implementations at each size
    for n in sizes:
        done = {r["impl"]: r for r in rows if r["n"] == n and "metrics" in r}
        if "ours" in done and "pml" in done:
            d = max(abs(done["ours"]["metrics"][k] - done["pml"]["metrics"][k])
                    for k in ("recall@1", "map@r", "r_precision"))
            for r in done.values():
                r["max_abs_diff_vs_other"] = d

    table = markdown_table(rows)
    print(table)

    out = {"command": C.command_line(__file__, argv), "date": C.now_utc(), "git_commit": C.git_commit(),
           "machine": C.machine_info(PACKAGES),
           "load_average_1_5_15min": {"start": load_start, "end": os.getloadavg()},
           "config": {k: v for k, v in vars(args).items()
                      if k not in ("child", "impl", "n")},
           "results": rows, "table_markdown": table}
    C.write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
