"""``dva demo``: the whole product on the offline default, in one command.

Bundled ImageNet MobileNetV2; real birds from ``cub100`` when it is found, else a generated data
set. Train DVA, compare Recall@K with the frozen backbone, index the test gallery, search it and
write a visual report under ``runs/demo/``.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dva.config import load_config
from dva.data.locate import find_dataset
from dva.utils import atomic_write_json


def format_table(rows: dict[str, dict], ks=(1, 2, 4, 8)) -> str:
    head = f"{'model':<28}" + "".join(f"{'R@' + str(k):>8}" for k in ks) + f"{'MAP@R':>8}"
    lines = [head, "-" * len(head)]
    for name, m in rows.items():
        lines.append(f"{name:<28}" + "".join(f"{100 * m[f'recall@{k}']:>8.1f}" for k in ks) + f"{100 * m['map@r']:>8.1f}")
    return "\n".join(lines)


def _git(*args: str) -> str | None:
    """``git ARGS`` in the checkout this code runs from; None without git or outside a checkout."""
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_info_start() -> dict[str, Any]:
    """What a results record needs from the start of a run: the commit, whether tracked files differed from it
    (``git_dirty``: the code that ran is then no commit), the 1-minute load average."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None,
            "loadavg_start": os.getloadavg()[0]}


def run_info_end(start: dict[str, Any]) -> dict[str, Any]:
    """``start`` plus the load averages (1, 5, 15 min) and the CPU seconds at the end: the 5- and 15-minute
    averages cover most of a demo run, so a timing taken beside other jobs can be told apart."""
    import resource

    cpu = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    return {**start, "loadavg_end": list(os.getloadavg()), "cpu_seconds": cpu}


def _log_rows(log: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()] if log.is_file() else []


def _epoch_evals(log: Path) -> list[dict[str, Any]]:
    """The adapted model's periodic evaluations of the run (frozen rows and the final test score left out)."""
    keys = ("split", "epoch", "step", "recall@1", "recall@2", "recall@4", "recall@8", "map@r")
    return [{k: r.get(k) for k in keys} for r in _log_rows(log)
            if r.get("kind") == "eval" and not r.get("frozen") and r.get("split") != "test"]


def _split_sizes(log: Path) -> dict[str, Any]:
    """Training and periodic-evaluation image counts, from the run's ``setup`` record."""
    setup = next((r for r in _log_rows(log) if r.get("kind") == "setup"), {})
    return {"train_images": setup.get("train_images"), "eval_images": setup.get("eval_images")}


def demo_command(out: str, data: str | None, overrides: list[str] | None, progress: bool, synthetic: bool,
                 results: str) -> str:
    """The ``dva demo`` command line that ``run_demo`` with these arguments stands for (a data folder as <path>:
    no machine paths in a results file)."""
    return " ".join(["python -m dva_cli demo --out", out, *(["--data <path>"] if data else []),
                     *(["--synthetic"] if synthetic else []), *([] if progress else ["--no-progress"]),
                     *(overrides or []), "--results", results])


def results_record(result: dict[str, Any], summary: dict[str, Any], cfg: Any, out: Path,
                   info: dict[str, Any], command: str) -> dict[str, Any]:
    """What ``--results`` keeps of a demo run: metrics, settings, timings and provenance (no machine paths).

    Args:
        result: the run's ``demo.json`` content (table, params, timings).
        summary: the training summary (steps, boxes, evaluation split).
        cfg: the resolved configuration.
        out: the demo's output folder (its ``log.jsonl`` gives the per-epoch evaluations).
        info: ``run_info_end(run_info_start())``: commit, load averages, CPU seconds.
        command: the command line that made it.

    Returns:
        A JSON-serialisable dict.
    """
    import torch

    return {
        "benchmark": "demo", "command": command, "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "git_commit": info.get("git_commit"), "git_dirty": info.get("git_dirty"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "loadavg_1m": [info.get("loadavg_start"), (info.get("loadavg_end") or [None])[0]],
                    "loadavg_end_1_5_15": info.get("loadavg_end"), "cpu_seconds": info.get("cpu_seconds")},
        "settings": {"dataset": cfg.data.dataset, "protocol": cfg.data.protocol, "backbone": cfg.backbone.name,
                     "img_size": cfg.backbone.img_size, "ica_rank": cfg.ica.rank, "ica_target": cfg.ica.target,
                     "ica_blocks": cfg.ica.blocks, "box_source": cfg.opa.box_source, "beta": cfg.loss.beta,
                     "epochs": cfg.train.epochs, "steps": summary["steps"], "val_classes": cfg.data.val_classes},
        "eval_split": summary["eval_split"], "steps": summary["steps"], "boxes": summary["boxes"],
        **_split_sizes(out / "log.jsonl"),
        "table": result["table"], "params": result["params"], "evals": _epoch_evals(out / "log.jsonl"),
        "prep_seconds": result["prep_seconds"], "train_seconds": result["train_seconds"],
        "wall_seconds": result["wall_seconds"],
    }


def run_demo(out: str = "runs/demo", data: str | None = None, overrides: list[str] | None = None,
             progress: bool = True, synthetic: bool = False, results: str | None = None,
             command: str | None = None, overwrite: bool = False) -> dict:
    """Train + evaluate + index + search + report; returns the summary written to ``OUT/demo.json``.

    Args:
        results: also write the run's metrics, timings and provenance to this JSON file (e.g.
            ``benchmarks/results/demo.json``: the docs render the demo's numbers from it).
        command: the command line recorded in ``results`` (default: the ``dva demo`` flags of this call).
        overwrite: train afresh in ``out`` (default: resume the demo's own run there, or reuse it when
            finished; a run made with other settings is refused, naming this option).
    """
    from dva_train.train import train

    t0 = time.time()
    info = run_info_start()  # timings on a shared machine: record the load (and the code) with them
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
    try:
        # Bars only on a terminal (in a log file each redraw is a line); the log rows as asked.
        summary = train(cfg, resume=not overwrite, progress=progress and sys.stderr.isatty(), overwrite=overwrite,
                        echo=progress)
    except ValueError as exc:  # a run of other settings (an older demo, other overrides) is in `out`
        if overwrite or "resume-with-changes" not in str(exc):
            raise
        raise ValueError(f"{exc}\n`dva demo`: pass --overwrite to train the demo again in {out}, "
                         "or --out for another folder") from None
    # A run that validated on held-out training classes reports the test split, scored once for
    # the model validation chose; otherwise the evaluation split is the test split.
    held = bool(summary.get("test_metrics"))
    rows = {"frozen backbone": summary["test_frozen_metrics"] if held else summary["frozen_metrics"],
            "DVA (ICA + OPA + DPT)": summary["test_metrics"] if held else summary["metrics"]}
    checkpoint = summary["test_model"]["path"] if held else summary["checkpoint"]
    p = summary["params"]
    table = format_table(rows)
    print("\nRecall@K on test classes never seen in training "
          + (f"(model chosen on {summary['eval_split']} classes, step {summary['test_model']['step']}) " if held else "")
          + f"({p['adapter_params']:,} trainable adapter parameters = {100 * p['trainable_fraction']:.2f}% of the backbone)")
    print(table)

    from dva.data import load_split
    from dva.runtime.load import load_embedder, onnx_embedder_for
    from dva.runtime.sessions import onnx_available
    from dva.retrieval.pipeline import index_search_report

    split = load_split(cfg.data.dataset, cfg.data.root, cfg.data.protocol)
    gallery = split.test
    torch_embedder = load_embedder(checkpoint=checkpoint)
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
              "checkpoint": checkpoint, "retrieval": retrieval}
    atomic_write_json(Path(out) / "demo.json", result)
    (Path(out) / "table.txt").write_text(table + "\n")
    if results:
        command = command or demo_command(out, data, overrides, progress, synthetic, results)
        record = results_record(result, summary, cfg, Path(out), run_info_end(info), command)
        atomic_write_json(results, record)
        print(f"results: {results}")
    print(f"\nreport: {retrieval.get('report', Path(out) / 'retrieval/report/index.html')}")
    print(f"demo finished in {time.time() - t0:.0f} s; artefacts in {out}/")
    return result
