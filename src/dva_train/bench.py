"""The cub100 benchmark: DVA against its baselines, side by side, with ablations.

Every row is one ``train()`` run of the packaged ``demo`` config plus overrides, in its own
subprocess (so that peak resident memory is per row: ``os.wait4`` rusage). Rows share one
prefix-cache folder and one OPA boxes file per input size, so only the first run of a kind pays
for the frozen layers. Results: a JSON file under ``benchmarks/results/``, a section of
``docs/BENCHMARKS.md`` and a plot of R@1 against trainable parameters.

Run ``python benchmarks/cub100.py --help`` (or ``dva bench cub100 --help``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SECTION = "## cub100: DVA vs baselines"
METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r")

# The ICA settings recommended for the MobileNetV2 (chosen on the validation split, classes
# 40-49; see the "val" profile). Passed as overrides so that the benchmark states them.
# (The blocks slice is YAML-quoted: a bare -2: parses as a mapping, see dva.config.load_config.)
DVA_DEFAULTS = ["--ica.rank", "4", "--ica.target", "pw+pwl", "--ica.blocks", "'-2:'"]

# name -> (group, label, overrides). The "frozen" row is an embedding pass, not a training run.
MAIN_ROWS: dict[str, tuple[str, str, list[str]]] = {
    "frozen": ("main", "frozen backbone", []),
    "head": ("main", "head (linear projection)", ["--train.trainable", "head", "--opa.enabled", "false"]),
    "full": ("main", "full fine-tune", ["--train.trainable", "full", "--opa.enabled", "false",
                                        "--train.cache_prefix", "off", "--train.augment", "none",
                                        "--train.lr", "1e-4"]),
    "ica": ("main", "ICA", ["--opa.enabled", "false"]),
    "ica_opa": ("main", "ICA + OPA", ["--loss.beta", "0"]),
    "dva": ("main", "DVA (ICA + OPA + DPT)", []),
}


# The same configuration as another row: one run folder (the defaults are rank 4, gelu, self boxes, beta 1).
ALIAS = {"ica_cached": "ica", "dva_beta1": "dva", "dva_rank4": "dva", "dva_act_gelu": "dva", "dva_box_self": "dva"}
HALF = "@half"  # expanded by main() to half the profile's training budget
RUN_ORDER = ["ica", "dva", "ica_opa", "head", "full", "frozen"]


def frozen_key(overrides: list[str]) -> tuple[int, int]:
    """Runs with the same (input size, validation classes) share the frozen-backbone metrics."""
    from dva.config import load_config

    cfg = load_config("demo", overrides)
    return cfg.backbone.img_size, cfg.data.val_classes


def expand_half(overrides: list[str], epochs: int, max_steps: int) -> list[str]:
    """Replace the ``HALF`` marker by overrides for half the profile's budget (steps, else epochs)."""
    half = (["--train.max_steps", str(max_steps // 2)] if max_steps
            else ["--train.epochs", str(max(1, epochs // 2)), "--train.max_steps", "0"])
    return [t for o in overrides for t in (half if o == HALF else [o])]


def fill_frozen_metrics(done: list) -> None:
    """A frozen row measured for speed only takes its metrics from a trained run's ``frozen_metrics``."""
    donors = [r for *_, runs in done for r in runs if r.get("frozen_metrics")]
    for name, _g, _l, _o, runs in done:
        for r in runs:
            if r.get("metrics") is None:
                same = [d for d in donors if d.get("img_size") == r.get("img_size") and d.get("eval_split") == r.get("eval_split")]
                if not same:
                    raise RuntimeError(f"row {name}: no trained run at {r.get('img_size')} px to take frozen metrics from")
                r["metrics"] = same[0]["frozen_metrics"]
                r["metrics_source"] = f"frozen_metrics of {same[0]['name']} (eval through the float16 prefix cache)"


def ablation_rows() -> dict[str, tuple[str, str, list[str]]]:
    rows: dict[str, tuple[str, str, list[str]]] = {}
    for b in ("0.1", "0.5", "1", "2", "5"):
        rows[f"dva_beta{b}"] = ("beta", f"DVA beta={b}", ["--loss.beta", b])
    for r in ("4", "8", "16", "32"):
        rows[f"dva_rank{r}"] = ("rank", f"DVA rank={r}", ["--ica.rank", r])
    for a in ("gelu", "identity"):
        rows[f"dva_act_{a}"] = ("act", f"DVA act={a}", ["--ica.act", a])
    rows["dva_box_self"] = ("box", "DVA boxes=self-localisation", ["--opa.box_source", "self"])
    rows["dva_box_none"] = ("box", "DVA boxes=none (x_disc = x)", ["--opa.box_source", "none"])
    # Where the adapters sit: every stage (no frozen prefix to cache, so every step runs the whole network)
    # at about the same parameter count as the default (last two stages). ICA only: one view per image.
    rows["ica_r2all"] = ("where", "ICA r=2 pw+pwl, all stages (1.52%)",
                         ["--opa.enabled", "false", "--ica.rank", "2", "--ica.blocks", "all",
                          "--train.cache_prefix", "off", "--train.augment", "none"])
    # Budget: half the profile's steps (the full profile: 1 epoch instead of 2).
    rows["ica_half"] = ("budget", "ICA, half the steps", ["--opa.enabled", "false", HALF])
    rows["dva_half"] = ("budget", "DVA, half the steps", [HALF])
    # The SPEC section 6 feasibility setting (7.1% of the backbone: over the 2% budget), for reference.
    rows["ica_r16head"] = ("budget", "ref.: ICA r=16 pw+pwl+head (SPEC 6, 7.1%)",
                           ["--opa.enabled", "false", "--ica.rank", "16", "--ica.target", "pw+pwl+head"])
    return rows


def speedup_rows() -> dict[str, tuple[str, str, list[str]]]:
    """What each speed-up costs: prefix cache vs online augmentation; 224 vs reduced size."""
    return {
        "ica_cached": ("speedup", "ICA, prefix cache (fixed views)", ["--opa.enabled", "false"]),
        "ica_online": ("speedup", "ICA, online augmentation (no cache)",
                       ["--opa.enabled", "false", "--train.cache_prefix", "off", "--train.augment", "standard"]),
        "frozen_224": ("speedup", "frozen, 224 px", ["--backbone.img_size", "224"]),
        "frozen_160": ("speedup", "frozen, 160 px", ["--backbone.img_size", "160"]),
        "dva_160px": ("speedup", "DVA, 160 px input", ["--backbone.img_size", "160"]),
    }


# Hyper-parameter selection on the validation split (classes 40-49; training on 0-39).
def val_rows() -> dict[str, tuple[str, str, list[str]]]:
    """Candidates for the MobileNetV2 defaults, scored on classes 40-49 (training on 0-39 only).

    Run with ``--profile val --epochs 3 --max-steps 184`` (184 steps = 2 epochs of the full training
    half, 2.5 of the 40-class part). The baselines are here too, so that a candidate can be compared
    with them without looking at the test classes.
    """
    val = ["--data.val_classes", "10"]
    online = ["--train.cache_prefix", "off", "--train.augment", "none"]  # adapters in stage 0: no prefix to cache
    cands: dict[str, tuple[str, list[str]]] = {
        "val_frozen": ("frozen backbone", []),
        "val_head": ("head", MAIN_ROWS["head"][2]),
        "val_ica_r4": ("ICA r4 pw+pwl -2: (1.49%)", ["--opa.enabled", "false"]),
        "val_dva_r4": ("DVA r4 pw+pwl -2: (1.49%)", []),
        "val_dva_r4_lr3e-3": ("DVA r4 pw+pwl -2:, lr 3e-3", ["--train.lr", "3e-3"]),
        "val_dva_r8pw": ("DVA r8 pw -2: (1.45%)", ["--ica.rank", "8", "--ica.target", "pw"]),
        # Adapters in every stage cannot use the prefix cache: ICA only (one view), to keep the cost of a row
        # near that of the full fine-tune; compare with val_ica_r4.
        "val_ica_r2all": ("ICA r2 pw+pwl all stages (1.52%)", ["--opa.enabled", "false", "--ica.rank", "2",
                                                                "--ica.blocks", "all"] + online),
        "val_ica_r4pwall": ("ICA r4 pw all stages (1.50%)", ["--opa.enabled", "false", "--ica.target", "pw",
                                                              "--ica.blocks", "all"] + online),
        "val_full": ("full fine-tune", MAIN_ROWS["full"][2]),
    }
    return {k: ("val", lab, val + ov) for k, (lab, ov) in cands.items()}


def find_cub100(explicit: str | None = None) -> Path:
    """``--root``, ``$DVA_CUB100`` or ``<repo>/../shared/data/cub100``; a clear error when absent."""
    tried = []
    for c in (explicit or "", os.environ.get("DVA_CUB100", ""), str(REPO.parent / "shared/data/cub100")):
        if not c:
            continue
        tried.append(c)
        if (Path(c) / "images.txt").is_file():
            return Path(c)
    raise FileNotFoundError(
        "cub100 not found (looked in: " + ", ".join(tried) + "); pass --root DIR or set DVA_CUB100 to the folder "
        "holding images.txt (see ../shared/data/cub100/README.md)")


# ----------------------------------------------------------------------------- worker
def _worker(spec_path: str) -> int:
    """One row in this process: train (or embed only, for ``frozen``) and write ``result.json``."""
    import numpy as np
    import torch

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(spec["threads"]))
    from dva.config import load_config
    from dva.inference import Embedder
    from dva.metrics import retrieval_metrics
    from dva_train.train import prepare_data

    cfg = load_config("demo", spec["overrides"] + ["--output_dir", str(out)])
    data = prepare_data(cfg)
    res: dict[str, Any] = {"name": spec["name"], "seed": cfg.train.seed, "img_size": cfg.backbone.img_size}
    if spec["kind"] == "frozen":
        from dva.model import build_model, count_parameters

        # The backbone alone (no adapters, no head). With embed_images = -1 the whole evaluation set
        # is embedded and scored; otherwise only the speed is measured on the first images and the
        # metrics come from the frozen_metrics of a trained row (same images, adapters off).
        cfg.ica.enabled = False
        cfg.train.trainable = "none"
        model = build_model(cfg, 0)
        emb = Embedder(model)
        n = int(spec.get("embed_images", 0))
        paths = data.eval_paths if n < 0 else data.eval_paths[:max(n, 1)]
        t0 = time.time()
        e = emb.embed_paths(paths, batch_size=cfg.train.batch_size_eval, progress=False)
        dt = time.time() - t0
        res.update(params=count_parameters(model), train_seconds=0.0, train_img_per_s=None, steps=0,
                   embed_images=len(e), embed_img_per_s=len(e) / dt, eval_split=data.eval_name,
                   metrics=retrieval_metrics(e, data.eval_labels) if len(paths) == len(data.eval_paths) else None)
    else:
        from dva.checkpoint import load_checkpoint
        from dva_train.train import train

        t0 = time.time()
        summary = train(cfg, progress=False)
        res.update(summary)
        res["wall_seconds_train"] = time.time() - t0
        n = int(spec.get("embed_images", 0))
        if n:
            model, _ = load_checkpoint(summary["checkpoint"])
            emb = Embedder(model)
            paths = data.eval_paths[:n] if n > 0 else data.eval_paths
            t0 = time.time()
            e = emb.embed_paths(paths, batch_size=cfg.train.batch_size_eval, progress=False)
            res["embed_images"] = len(e)
            res["embed_img_per_s"] = len(e) / (time.time() - t0)
            if len(paths) == len(data.eval_paths):  # full pass: re-check the metrics through the real path
                res["metrics_embedder"] = retrieval_metrics(e, data.eval_labels)
    res = json.loads(json.dumps(res, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
    (out / "result.json").write_text(json.dumps(res, indent=1))
    return 0


# ----------------------------------------------------------------------------- runner
def _boxes_key(overrides: list[str]) -> str:
    from dva.config import load_config

    cfg = load_config("demo", overrides)
    return f"boxes_{cfg.backbone.name}_{cfg.backbone.img_size}_{cfg.opa.threshold}_{cfg.opa.loc_scale}_{cfg.data.val_classes}.json"


def run_one(name: str, kind: str, overrides: list[str], out: Path, cache_dir: Path, threads: int,
            embed_images: int, log=print) -> dict[str, Any]:
    """Run one row in a subprocess (reusing ``out/result.json`` when present); adds wall time + peak RSS."""
    res_path = out / "result.json"
    if res_path.is_file():
        res = json.loads(res_path.read_text())
        if "peak_rss_mb" in res:
            log(f"  [cached] {name} ({out.name})", flush=True)
            return res
    out.mkdir(parents=True, exist_ok=True)
    # Share the OPA boxes between runs: the loader checks their metadata, so a mismatch is recomputed.
    bkey = cache_dir / _boxes_key(overrides)
    if bkey.is_file() and not (out / "boxes.json").is_file():
        shutil.copyfile(bkey, out / "boxes.json")
    spec = {"name": name, "kind": kind, "overrides": overrides, "out": str(out), "threads": threads,
            "embed_images": embed_images}
    (out / "spec.json").write_text(json.dumps(spec, indent=1))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    load0 = os.getloadavg()[0]  # other jobs on the machine distort every timing: record the load
    t0 = time.time()
    with open(out / "stdout.log", "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "dva_train.bench", "--worker", str(out / "spec.json")],
                                stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - t0
    if proc.returncode != 0 or not res_path.is_file():
        tail = (out / "stdout.log").read_text()[-2000:]
        raise RuntimeError(f"row {name} failed (exit {proc.returncode}); log {out / 'stdout.log'}:\n{tail}")
    if (out / "boxes.json").is_file() and not bkey.is_file():
        shutil.copyfile(out / "boxes.json", bkey)
    res = json.loads(res_path.read_text())
    res["wall_seconds"] = wall
    res["peak_rss_mb"] = ru.ru_maxrss / 1024.0  # Linux: kilobytes
    res["loadavg_1m"] = [load0, os.getloadavg()[0]]  # at the row's start and end
    res_path.write_text(json.dumps(res, indent=1))
    m = res.get("metrics") or {}
    log(f"  {name} ({out.name}): R@1 {100 * m.get('recall@1', float('nan')):.2f} MAP@R "
        f"{100 * m.get('map@r', float('nan')):.2f} wall {wall:.0f}s rss {res['peak_rss_mb']:.0f}MB", flush=True)
    return res


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def aggregate(name: str, group: str, label: str, overrides: list[str], runs: list[dict]) -> dict[str, Any]:
    """One table row from its runs (seeds): mean and spread of every number."""
    row: dict[str, Any] = {"name": name, "group": group, "label": label, "overrides": overrides,
                           "seeds": [r.get("seed") for r in runs], "runs": runs}
    stats: dict[str, Any] = {}
    for k in METRICS:
        stats[k] = mean_std([100.0 * r["metrics"][k] for r in runs])
    for k in ("train_seconds", "train_img_per_s", "embed_img_per_s", "peak_rss_mb", "wall_seconds"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        stats[k] = mean_std(vals) if vals else None
    row["stats"] = stats
    p = runs[0]["params"]
    row["trainable_params"] = int(p["trainable_params"])
    row["trainable_pct"] = 100.0 * float(p["trainable_fraction"])
    row["backbone_params"] = int(p["backbone_params"])
    row["eval_split"] = runs[0].get("eval_split", "test")
    row["img_size"] = runs[0].get("img_size")
    return row


def _fmt_pm(s: tuple[float, float] | list | None, digits: int = 1, spread: bool = True) -> str:
    if s is None:
        return "-"
    m, sd = s
    if spread and sd > 0:
        return f"{m:.{digits}f} ± {sd:.{digits}f}"
    return f"{m:.{digits}f}"


def format_params(n: int, pct: float) -> str:
    """``33,152 (1.49%)``; the frozen row trains nothing."""
    if n == 0:
        return "0"
    return f"{n:,} ({pct:.2f}%)"


HEADER = ("| row | trainable params (% of backbone) | R@1 | R@2 | R@4 | R@8 | MAP@R | train s | train img/s "
          "| row wall s | embed img/s | peak RSS MB | seeds |")


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table: metrics in %, ``mean ± sample std`` over seeds."""
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for r in rows:
        s = r["stats"]
        cells = [r["label"], format_params(r["trainable_params"], r["trainable_pct"])]
        cells += [_fmt_pm(s[k]) for k in METRICS]
        cells += [_fmt_pm(s["train_seconds"], 0, False) if r["trainable_params"] else "-",
                  _fmt_pm(s["train_img_per_s"], 0, False), _fmt_pm(s["wall_seconds"], 0, False),
                  _fmt_pm(s["embed_img_per_s"], 0, False),
                  _fmt_pm(s["peak_rss_mb"], 0, False), str(len(r["seeds"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replace_section(doc: str, section: str, body: str) -> str:
    """Replace ``section`` (a ``## `` heading up to the next ``## `` heading) in ``doc``, or append it."""
    if not doc.strip():
        doc = "# Benchmarks\n"
    lines = doc.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == section), None)
    new = [section, ""] + body.strip("\n").splitlines() + [""]
    if start is None:
        out = lines + ([""] if lines and lines[-1].strip() else []) + new
    else:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
        out = lines[:start] + new + lines[end:]
    return "\n".join(out).rstrip("\n") + "\n"


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                model = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for ln in Path("/proc/meminfo").read_text().splitlines():
            if ln.startswith("MemTotal"):
                ram = round(int(ln.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    import timm
    import torch

    return {"cpu_count": os.cpu_count(), "cpu_model": model, "ram_gb": ram, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "torch_threads": torch.get_num_threads()}


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def plot(rows: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """R@1 against trainable parameters (log x; the frozen row sits at 1 parameter).

    Main rows (with their seed spread) and the rank / budget rows, whose parameter counts or
    budgets differ; the beta / activation / box ablations share DVA's x and are in the tables.
    Dashed lines: the frozen R@1 and the target (frozen + 3); dotted vertical: 2% of the backbone.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    frozen = next((r for r in rows if r["name"] == "frozen"), None)
    if frozen is not None:
        f1 = frozen["stats"]["recall@1"][0]
        ax.axhline(f1, color="grey", ls="--", lw=0.8)
        ax.axhline(f1 + 3, color="red", ls=":", lw=0.8)
        ax.text(1.2, f1 + 3.05, "target: frozen + 3", color="red", fontsize=7)
    if rows:  # the DVA budget: under 2% of the backbone trained
        x2 = 0.02 * rows[0]["backbone_params"]
        ax.axvline(x2, color="purple", ls=":", lw=0.8)
        ax.text(x2 * 0.9, 0.02, "2% of the backbone", color="purple", fontsize=7, rotation=90, ha="right",
                va="bottom", transform=ax.get_xaxis_transform())  # x in data, y in axes units
    colours = {"main": "C0", "rank": "C1", "budget": "C2"}
    shown = [r for r in rows if r["group"] in colours]
    same_x: dict[int, int] = {}
    for r in shown:
        x = max(1, r["trainable_params"])
        m, sd = r["stats"]["recall@1"]
        k = same_x.get(x, 0)
        same_x[x] = k + 1
        xj = x * (1.0 + 0.05 * k)  # spread rows that share a parameter count
        ax.errorbar([xj], [m], yerr=[sd], fmt="o" if r["group"] == "main" else "s", ms=5, capsize=3,
                    color=colours[r["group"]])
        ax.annotate(r["label"], (xj, m), textcoords="offset points", xytext=(6, -3 + 8 * (k % 3) - 8), fontsize=7,
                    color=colours[r["group"]])
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log; frozen plotted at 1)")
    ax.set_ylabel("R@1 (%)")
    ax.set_title(f"cub100 open-set (test classes 50-99), MobileNetV2, {title}\n"
                 "blue: main rows (mean ± std over seeds); orange: DVA rank; green: budget rows")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several result files as one: rows concatenated (a row name kept once, first file wins)."""
    seen, rows = set(), []
    size0 = results[0]["settings"]["img_size"]
    for res in results:
        size = res["settings"]["img_size"]
        for r in res["rows"]:
            if size != size0:  # another input size: its own rows
                r = {**r, "name": f"{r['name']}@{size}", "label": f"{r['label']} @ {size} px"}
            if r["name"] not in seen:
                seen.add(r["name"])
                rows.append(r)
    rank = {n: i for i, n in enumerate(list(MAIN_ROWS) + list(ablation_rows()) + list(speedup_rows()) + list(val_rows()))}
    rows.sort(key=lambda r: (rank.get(r["name"].split("@")[0], len(rank)), r["name"]))
    return {**results[0], "rows": rows, "sources": [{"json": r.get("json"), "command": r["command"], "date": r["date"],
                                                     "profile": r["profile"], "wall_seconds_total": r.get("wall_seconds_total")}
                                                    for r in results]}


def _common(tokens: list[str]) -> str:
    """The common overrides, path values (left out of the JSON) shown as <path>."""
    out = []
    for i, t in enumerate(tokens):
        out.append(t)
        if t.startswith("--") and (i + 1 == len(tokens) or tokens[i + 1].startswith("--")):
            out.append("<path>")
    return " ".join(out)


def _budget(s: dict[str, Any]) -> str:
    if s.get("max_steps"):
        return f"{s['max_steps']} optimisation steps (8 classes x 4 images = 32 images per step, ~{s['max_steps'] * 32 / 2949:.2f} epochs)"
    return f"{s['epochs']} epochs (8 classes x 4 images per step)"


def markdown(result: dict[str, Any], notes: str = "") -> str:
    """The section body: how it was made, the main table, ablations, speed-ups, validation, notes."""
    rows = result["rows"]
    s = result["settings"]
    m = result["machine"]
    sources = result.get("sources") or [{"json": result.get("json"), "command": result["command"], "date": result["date"],
                                         "profile": result["profile"], "wall_seconds_total": result.get("wall_seconds_total")}]
    loads = [x for r in rows for run in r["runs"] for x in run.get("loadavg_1m", [])]
    load = (f"1-minute load average {min(loads):.1f}-{max(loads):.1f} at the rows' starts and ends "
            f"({m['cpu_count']} cores: above {m['cpu_count']} means other jobs shared the machine)" if loads
            else "load not recorded (the machine was shared with other jobs: timings are pessimistic)")
    out = [(f"Machine: {m['cpu_count']} x {m['cpu_model']}, {m['ram_gb']} GB RAM, {load}; "
            f"torch {m['torch']}, timm {m['timm']}; commit "
            f"{result.get('git_commit') or 'n/a'}. Produced by:"), ""]
    for src in sources:
        wall = f", {src['wall_seconds_total'] / 60:.0f} min" if src.get("wall_seconds_total") else ""
        out.append(f"- `{src['command']}` ({src['profile']}, {src['date']}{wall}) -> `{src['json']}`")
    out += [
        "",
        (
            f"Protocol: cub100 open-set, train on classes 0-49 (2,949 images), leave-one-out retrieval on classes "
            f"50-99 (2,953 images); bundled ImageNet MobileNetV2; **{s['img_size']} px**; {_budget(s)} for every "
            f"trained row; {s['threads']} thread(s) per run; metrics in %, mean ± sample std over seeds {s['seeds']} "
            f"(ablations and speed-up checks: first seed only). ICA settings of every adapter row: "
            f"`{' '.join(s['dva_defaults'])}`. Common overrides: `{_common(s['common'])}`. "
            f"embed img/s: the first {s['embed_images']} test images through the saved model with "
            f"`dva.inference.Embedder` (decode + resize + forward). train s / train img/s: the optimisation loop "
            f"only; row wall s: the row's whole subprocess (model, OPA boxes, prefix caches - built by the first row "
            f"that needs them and reused by the later ones, so it depends on the order -, training, evaluation, "
            f"embedding pass). Peak RSS: the row's own subprocess (`os.wait4`)."
        ),
        "",
    ]
    groups = [("main", None), ("beta", "### Ablation: DPT weight beta"), ("rank", "### Ablation: ICA rank"),
              ("act", "### Ablation: ICA activation"), ("where", "### Ablation: where the adapters sit"), ("box", "### Ablation: OPA box source"),
              ("budget", "### Training budget and the SPEC section 6 reference"), ("speedup", "### What the speed-ups cost"), ("val", "### Validation split: train classes 0-39, retrieve 40-49 (184 steps; where the defaults were chosen)")]
    for g, title in groups:
        rs = [r for r in rows if r["group"] == g]
        if not rs:
            continue
        if title:
            out += [title, ""]
        out += [format_table(rs), ""]
    if result.get("plot"):
        out += [f"![R@1 vs trainable parameters]({Path(result['plot']).name})", ""]
    if notes.strip():
        out += [notes.strip(), ""]
    return "\n".join(out)


def render(results: list[dict[str, Any]], doc: Path, plot_path: Path | None, notes: str = "") -> dict[str, Any]:
    """Write the plot and this benchmark's section of ``doc`` from one or more result files."""
    merged = merge_results(results)
    plotted = [r for r in merged["rows"] if r["group"] in ("main", "rank", "budget") and r["name"] != "dva_rank4"]
    if plot_path is not None and any(r["group"] == "main" for r in plotted):
        st = merged["settings"]
        plot(plotted, plot_path, f"{st['img_size']} px, {_budget(st).split(' (')[0]}")
        merged["plot"] = str(plot_path)
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.is_file() else ""
    doc.write_text(replace_section(text, SECTION, markdown(merged, notes)))
    return merged


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``benchmarks/cub100.py`` / ``dva bench cub100``."""
    p = argparse.ArgumentParser(prog="benchmarks/cub100.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--profile", choices=("quick", "full", "val", "ablations", "speedup"), default="quick",
                   help="quick: main rows, 1 seed; full: main rows x 3 seeds + ablations + speed-up checks; "
                        "val: hyper-parameter candidates on the validation split")
    p.add_argument("--quick", dest="profile", action="store_const", const="quick", help="same as --profile quick")
    p.add_argument("--full", dest="profile", action="store_const", const="full", help="same as --profile full")
    p.add_argument("--root", default=None, help="cub100 folder (default $DVA_CUB100 or ../shared/data/cub100)")
    p.add_argument("--seeds", default=None, help="comma-separated (default: quick 0, full 0,1,2)")
    p.add_argument("--rows", default=None, help="comma-separated row names to run (default: the profile's)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=0, help="> 0: every trained row stops after this many steps")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--embed-images", type=int, default=512,
                   help="test images embedded through the full model for embed img/s (-1: all)")
    p.add_argument("--work-dir", default=str(REPO / "runs" / "bench_cub100"))
    p.add_argument("--cache-dir", default=None, help="shared prefix caches (default WORK_DIR/cache)")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/cub100_<profile>.json)")
    p.add_argument("--doc", default=str(REPO / "docs" / "BENCHMARKS.md"))
    p.add_argument("--plot", default=str(REPO / "docs" / "cub100_r1_vs_params.png"))
    p.add_argument("--no-doc", action="store_true", help="do not touch docs/ (JSON only)")
    p.add_argument("--notes", default=None, help="a markdown file appended to the section (analysis)")
    p.add_argument("--render", nargs="+", metavar="JSON", default=None,
                   help="run nothing: rebuild the docs section and plot from these result files (merged)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return _worker(args.worker)
    if args.render:
        render([json.loads(Path(f).read_text()) for f in args.render], Path(args.doc), Path(args.plot),
               Path(args.notes).read_text() if args.notes else "")
        print(f"updated {args.doc} ({SECTION}) and {args.plot}")
        return 0

    root = find_cub100(args.root)
    work = Path(args.work_dir)
    cache = Path(args.cache_dir) if args.cache_dir else work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else ([0, 1, 2] if args.profile == "full" else [0])
    common = ["--data.root", str(root), "--train.cache_dir", str(cache), "--train.threads", str(args.threads),
              "--backbone.img_size", str(args.img_size), "--train.epochs", str(args.epochs),
              "--train.max_steps", str(args.max_steps),
              "--train.eval_every", "0", "--train.save_every", "0", "--train.log_every", "20"]
    plan: list[tuple[str, tuple[str, str, list[str]], list[int]]] = []
    if args.profile in ("quick", "full"):
        plan += [(n, spec, seeds if n != "frozen" else [0]) for n, spec in MAIN_ROWS.items()]
    if args.profile in ("full", "ablations"):
        plan += [(n, spec, [seeds[0]]) for n, spec in ablation_rows().items()]
    if args.profile in ("full", "speedup"):
        plan += [(n, spec, [seeds[0]]) for n, spec in speedup_rows().items()]
    if args.profile == "val":
        plan += [(n, spec, [seeds[0]]) for n, spec in val_rows().items()]
    if args.rows:
        want = args.rows.split(",")
        allrows = {**MAIN_ROWS, **ablation_rows(), **speedup_rows(), **val_rows()}
        unknown = [w for w in want if w not in allrows]
        if unknown:
            raise ValueError(f"unknown row(s) {unknown}; known: {sorted(allrows)}")
        # Main rows, or any row when --seeds is given, run every seed (frozen: one).
        plan = [(n, allrows[n], seeds if (allrows[n][0] == "main" or args.seeds) and "frozen" not in n.split("_")
                 else [seeds[0]]) for n in want]

    # Cheapest-first execution order: the ICA row builds the shared x-view caches (and measures the
    # frozen metrics), DVA adds the object/background views, the baselines come after.
    order = {n: i for i, n in enumerate(RUN_ORDER)}
    plan.sort(key=lambda t: order.get(t[0], len(order)))
    t_all = time.time()
    done: list[tuple[str, str, str, list[str], list[dict]]] = []
    donors: set[tuple[int, int]] = set()  # (img_size, val_classes) whose frozen metrics are being measured
    for name, (group, label, ov), row_seeds in plan:
        runs = []
        kind = "frozen" if "frozen" in name.split("_") else "train"
        dva_ov = [] if kind == "frozen" or "--train.trainable" in ov else list(DVA_DEFAULTS)
        ov = expand_half(ov, args.epochs, args.max_steps)
        for seed in row_seeds:
            overrides = common + dva_ov + ov + ["--train.seed", str(seed)]
            if kind == "train":
                # The frozen baseline is the same for every row of a size and split: measure it in the
                # first trained run only (a whole extra pass over the test images in uncached rows).
                key = frozen_key(overrides)
                if key in donors:
                    overrides += ["--train.eval_frozen", "false"]
                donors.add(key)
            tag = f"{ALIAS.get(name, name)}_s{seed}_{args.img_size}px_{args.max_steps or args.epochs}{'st' if args.max_steps else 'ep'}"
            print(f"[{time.strftime('%H:%M:%S')}] {tag}", flush=True)
            n_embed = -1 if (kind == "frozen" and group != "main") else (args.embed_images if seed == row_seeds[0] else 0)
            runs.append(run_one(name, kind, overrides, work / tag, cache, args.threads, n_embed))
        done.append((name, group, label, dva_ov + ov, runs))
    fill_frozen_metrics(done)
    rank = {n: i for i, n in enumerate(list(MAIN_ROWS) + list(ablation_rows()) + list(speedup_rows()) + list(val_rows()))}
    done.sort(key=lambda t: rank.get(t[0], len(rank)))
    rows = [aggregate(*d) for d in done]

    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"cub100_{args.profile}.json"
    command = "python benchmarks/cub100.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    result = {
        "benchmark": "cub100", "profile": args.profile, "command": command.strip(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(), "machine": machine_info(),
        "settings": {"img_size": args.img_size, "epochs": args.epochs, "max_steps": args.max_steps, "seeds": seeds, "threads": args.threads,
                     "embed_images": args.embed_images, "dva_defaults": DVA_DEFAULTS,
                     "common": [c for c in common if not c.startswith("/")]},
        "wall_seconds_total": time.time() - t_all,
        "json": str(out.relative_to(REPO)) if out.is_relative_to(REPO) else str(out),
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(format_table(rows))
    print(f"wrote {out}")
    if not args.no_doc:
        render([result], Path(args.doc), Path(args.plot), Path(args.notes).read_text() if args.notes else "")
        print(f"updated {args.doc} ({SECTION})")
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ----------------------------------------------------------------------------- ViT efficiency
VIT_SECTION = "## ViT efficiency"


def vit_efficiency(batches: tuple[int, ...] = (1, 32), repeats: int = 3, threads: int = 2, rank: int = 16,
                   name: str = "vit_base_patch16_224") -> dict[str, Any]:
    """Parameters and CPU forward img/s of a random-weight ViT: frozen vs ICA (gelu) vs merged ICA (identity)."""
    import torch

    from dva import DVAConfig, build_model, count_parameters
    from dva.ica import merge_ica

    torch.set_num_threads(threads)

    def make(act: str):
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

    variants = {
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
    bs = sorted({int(b) for v in r["speed"].values() for b in v})
    head = "| variant | parameters | " + " | ".join(f"img/s @ batch {b}" for b in bs) + " |"
    lines = [head, "|" + "---|" * (len(bs) + 2)]
    labels = {"frozen": ("frozen", f"{r['backbone_params']:,}"),
              "ica_gelu": ("ICA r={} Q/K, gelu".format(r["ica"]["rank"]),
                           f"{r['backbone_params']:,} + {r['adapter_params']:,} ({r['trainable_pct']:.2f}%)"),
              "ica_merged_identity": ("ICA, identity, merged", f"{r['merged_params']:,}")}
    for k, (lab, par) in labels.items():
        lines.append(f"| {lab} | {par} | " + " | ".join(f"{r['speed'][k][str(b)]['img_per_s']:.1f}" for b in bs) + " |")
    return "\n".join(lines)


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


def vit_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/vit_efficiency.py",
                                description="ViT-B/16 (random weights) parameters and CPU forward speed with ICA.")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "vit_efficiency.json"))
    p.add_argument("--doc", default=str(REPO / "docs" / "BENCHMARKS.md"))
    p.add_argument("--no-doc", action="store_true")
    p.add_argument("--render", action="store_true", help="run nothing: rebuild the docs section from --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.render:
        r = json.loads(out.read_text())
        args.threads, args.repeats = r["threads"], r["repeats"]
    else:
        load0 = os.getloadavg()[0]
        r = vit_efficiency(tuple(int(b) for b in args.batches.split(",")), args.repeats, args.threads)
        r["loadavg_1m"] = [load0, os.getloadavg()[0]]
        command = "python benchmarks/vit_efficiency.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        r.update(command=command.strip(), date=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                 git_commit=git_commit(), machine=machine_info())
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(r, indent=1))
    table = format_vit_table(r)
    print(table)
    if not args.no_doc:
        body = (f"Generated by `{r['command']}` on {r['date']} ({r['machine']['cpu_count']} x "
                f"{r['machine']['cpu_model']}, {args.threads} threads, {_vit_load(r)}; median of {args.repeats} "
                f"timed forward passes (variants interleaved) after one warm-up; torch {r['machine']['torch']}). `{r['backbone']}` with "
                f"random weights (no accuracy). ICA: rank {r['ica']['rank']} on Q and K of all 12 blocks = "
                f"{r['adapter_params']:,} parameters = {r['trainable_pct']:.2f}% of {r['backbone_params']:,}. "
                f"Merged: {r['merged_layers']} adapters folded into the frozen qkv weights (max |diff| "
                f"{r['merged_max_abs_diff']:.1e} on the embedding). JSON: `benchmarks/results/vit_efficiency.json` "
                f"(every timed run). Expected cost: the gelu branches add 2 x 12 x 197 tokens x 2 x 768 x "
                f"{r['ica']['rank']} multiply-adds = {2 * 12 * 197 * 2 * 768 * r['ica']['rank'] / 1e9:.2f} GMAC per image "
                f"over ViT-B/16's ~17.6 GMAC, i.e. ~{100 * 2 * 12 * 197 * 2 * 768 * r['ica']['rank'] / 17.6e9:.1f}%; merged, none. "
                f"{vit_overhead_sentence(r)}\n\n"
                + table + "\n")
        doc = Path(args.doc)
        text = doc.read_text() if doc.is_file() else ""
        doc.write_text(replace_section(text, VIT_SECTION, body))
    return 0
