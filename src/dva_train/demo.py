"""``dva demo``: the whole product on the offline default, in one command.

Bundled ImageNet MobileNetV2; real birds from ``cub100`` when it is found, else a generated data
set. Train DVA, compare Recall@K with the frozen backbone, index the test gallery, search it and
write a visual report under ``runs/demo/``.
"""
from __future__ import annotations

import time
from pathlib import Path

from dva.config import load_config
from dva.data.locate import find_dataset
from dva.utils import atomic_write_json


def format_table(rows: dict[str, dict], ks=(1, 2, 4, 8)) -> str:
    head = f"{'model':<28}" + "".join(f"{'R@' + str(k):>8}" for k in ks) + f"{'MAP@R':>8}"
    lines = [head, "-" * len(head)]
    for name, m in rows.items():
        lines.append(f"{name:<28}" + "".join(f"{100 * m[f'recall@{k}']:>8.1f}" for k in ks) + f"{100 * m['map@r']:>8.1f}")
    return "\n".join(lines)


def run_demo(out: str = "runs/demo", data: str | None = None, overrides: list[str] | None = None,
             progress: bool = True, synthetic: bool = False) -> dict:
    """Train + evaluate + index + search + report; returns the summary written to ``OUT/demo.json``."""
    from dva_train.train import train

    t0 = time.time()
    root = None if synthetic else find_dataset("cub100", data, required=bool(data))
    # Prefix caches on disk: a second `make demo` skips the frozen layers entirely.
    ov = ["--output_dir", out, "--train.cache_dir", str(Path(out) / "cache")]
    if root is not None:
        ov += ["--data.dataset", "cub100", "--data.root", str(root)]
        print(f"demo: real photos from {root} (cub100, open set: classes 0-49 train / 50-99 test)")
    else:
        from dva.data import make_synthetic

        root = Path(out) / "synthetic"
        make_synthetic(str(root), num_classes=40, per_class=24, size=128, seed=0)
        ov += ["--data.dataset", "synthetic", "--data.root", str(root), "--backbone.img_size", "128",
               "--train.epochs", "4"]
        why = "--synthetic" if synthetic else "cub100 not found (set DVA_CUB100)"
        print(f"demo: {why}; using a generated dataset in {root}")
    cfg = load_config("demo", ov + list(overrides or []))
    summary = train(cfg, resume=True, progress=progress)
    rows = {"frozen backbone": summary["frozen_metrics"], "DVA (ICA + OPA + DPT)": summary["metrics"]}
    p = summary["params"]
    table = format_table(rows)
    print(f"\nRecall@K on {summary['eval_split']} classes never seen in training "
          f"({p['adapter_params']:,} trainable adapter parameters = {100 * p['trainable_fraction']:.2f}% of the backbone)")
    print(table)

    from dva.data import load_split
    from dva.inference import load_embedder, onnx_embedder_for
    from dva.onnx_embedder import onnx_available
    from dva.retrieval.pipeline import index_search_report

    split = load_split(cfg.data.dataset, cfg.data.root, cfg.data.protocol)
    gallery = split.test
    torch_embedder = load_embedder(checkpoint=summary["checkpoint"])
    # The gallery is embedded by onnxruntime when installed (4-7x faster on a CPU, same vectors to
    # cosine 0.99999); the report's activation maps need the torch model.
    fast = torch_embedder.device.type == "cpu" and onnx_available()
    embedder = onnx_embedder_for(torch_embedder) if fast else torch_embedder
    # One query per class for the first 8 test classes: the report shows what DVA retrieves.
    seen, queries = set(), []
    for r in gallery:
        if r.label not in seen and len(queries) < 8:
            seen.add(r.label)
            queries.append(r.path)
    retrieval = index_search_report(embedder, [r.path for r in gallery], [r.label for r in gallery], queries,
                                    str(Path(out) / "retrieval"), log_path=str(Path(out) / "log.jsonl"), k=8,
                                    class_names=split.class_names, metrics=rows, maps=torch_embedder)
    result = {"table": rows, "params": p, "train_seconds": summary["train_seconds"],
              "prep_seconds": summary["prep_seconds"], "wall_seconds": time.time() - t0,
              "checkpoint": summary["checkpoint"], "retrieval": retrieval}
    atomic_write_json(Path(out) / "demo.json", result)
    (Path(out) / "table.txt").write_text(table + "\n")
    print(f"\nreport: {retrieval.get('report', Path(out) / 'retrieval/report/index.html')}")
    print(f"demo finished in {time.time() - t0:.0f} s; artefacts in {out}/")
    return result
