"""Markdown tables and the figure of the datasets harness, every number computed from the result JSON.

* :func:`main_table` — one (dataset, backbone): R@1, MAP@R, the change against the frozen row and
  the share of the frozen-to-full-fine-tune gap closed;
* :func:`ood_table` — the OOD matrix of one backbone: per ID dataset and method, the ID scores,
  each OOD R@1, their mean and its change against the frozen row;
* :func:`dataset_method_table` — R@1 of every method on every ID dataset (the "Six datasets" shape);
* :func:`select_table` — the select profile's candidates, validation scores and choices;
* :func:`figure` — ID gain against mean OOD change, one point per (dataset, method).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import _common as C
from benchmarks.datasets.ood import gap_closed, matrix

# Columns of the dataset x method table, in order (main row names).
METHODS = ("frozen", "head", "full", "ica", "ica_opa", "dva", "dva_det")


def num(v: float | None, digits: int = 1, signed: bool = False) -> str:
    """A number for a table cell; ``-`` for none."""
    if v is None:
        return "-"
    if round(v, digits) == 0:
        v = 0.0  # neither "-0.0" nor "+0.0": a difference that rounds to nothing has no sign
        return f"{v:.{digits}f}"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def mean_sd(v: list[float] | None, n: int) -> str:
    """``m ± sd`` over ``n`` > 1 seeds, else ``m``."""
    if v is None:
        return "-"
    return f"{v[0]:.1f} ± {v[1]:.1f}" if n > 1 else f"{v[0]:.1f}"


def _row(result: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((r for r in result["rows"] if r["name"] == name), None)


def _r1(row: dict[str, Any] | None) -> float | None:
    return None if row is None else float(row["stats"]["recall@1"][0])


def main_table(result: dict[str, Any]) -> str:
    """The main profile of one (dataset, backbone): method, seeds, R@1, MAP@R, ΔR@1, gap closed, share, steps."""
    frozen, full = _r1(_row(result, "frozen")), _r1(_row(result, "full"))
    body = []
    for r in result["rows"]:
        n = len(r["seeds"])
        r1 = _r1(r)
        delta = None if frozen is None or r["name"] == "frozen" else r1 - frozen
        gap = None if r["name"] in ("frozen", "full") else gap_closed(r1, frozen, full)
        body.append([r["label"], r.get("seeds_label", ""), mean_sd(r["stats"]["recall@1"], n),
                     mean_sd(r["stats"]["map@r"], n), num(delta, signed=True), num(gap, 0),
                     f"{r['trainable_pct']:.2f}%", r.get("steps") or "-"])
    return C.md_table(["method", "seeds", "R@1", "MAP@R", "ΔR@1 vs frozen", "gap closed %", "trainable", "steps"],
                      body, "llrrrrrr")


def same_run_notes(result: dict[str, Any]) -> list[str]:
    """One sentence per run that is another row's (the same resolved settings: run once, shown twice)."""
    owner = {run.get("folder"): r for r in result["rows"] for run in r.get("runs") or [] if not run.get("same_run_as")}
    out = []
    for r in result["rows"]:
        for run in r.get("runs") or []:
            tag = run.get("same_run_as")
            if not tag:
                continue
            other = owner.get(tag)
            whose = f"{other['label']}'s seed-{run.get('seed')} run" if other else f"the run in `{tag}`"
            out.append(f"{r['label']}, seed {run.get('seed')}: the same settings as {whose} (the overrides are equal "
                       "once the chosen values are filled in): that run, not a second one.")
    return out


def ood_table(per_dataset: dict[str, list[dict[str, Any]]]) -> str:
    """The OOD matrix of one backbone (:func:`benchmarks.datasets.ood.matrix`'s value for it)."""
    names = sorted({g for rows in per_dataset.values() for r in rows for g in r["ood"]})
    body = []
    for ds, rows in per_dataset.items():
        for r in rows:
            body.append([ds, r["label"], num(r["id_r1"]), num(r["id_map"]),
                         *[num(r["ood"].get(g)) if g in r["ood"] else "" for g in names],
                         num(r["mean_ood"]), num(r["ood_change"], signed=True)])
    header = ["ID dataset", "method", "ID R@1", "ID MAP@R", *[f"OOD R@1 {g}" for g in names], "mean OOD R@1",
              "Δ mean OOD vs frozen"]
    return C.md_table(header, body, "ll" + "r" * (len(header) - 2))


def dataset_method_table(results: list[dict[str, Any]]) -> str:
    """R@1 of each method (columns) on each (backbone, ID dataset) (rows); blank where not run."""
    present = [m for m in METHODS if any(_row(res, m) for res in results)]
    labels = {m: next(_row(res, m)["label"] for res in results if _row(res, m)) for m in present}
    body = [[res["settings"]["backbone"], res["settings"]["dataset"], *[num(_r1(_row(res, m))) for m in present]]
            for res in results]
    return C.md_table(["backbone", "ID dataset", *[labels[m] for m in present]], body, "ll" + "r" * len(present))


def select_table(result: dict[str, Any]) -> str:
    """Every select candidate: stage, name, overrides, validation MAP@R and R@1, trainable share, chosen."""
    body = []
    for st in result["stages"]:
        for c in st["candidates"]:
            m = c.get("val_metrics") or {}
            body.append([st["name"], c["name"], f"`{' '.join(c['overrides'])}`",
                         num(100.0 * m["map@r"] if "map@r" in m else None),
                         num(100.0 * m["recall@1"] if "recall@1" in m else None),
                         f"{c.get('trainable_pct') or 0.0:.2f}%", "**chosen**" if c["chosen"] else ""])
    return C.md_table(["stage", "candidate", "overrides", "val MAP@R", "val R@1", "trainable", ""], body, "lllrrrl")


def render_all(results: list[dict[str, Any]]) -> str:
    """Every result's table under its heading, then (main results) the dataset x method table and the OOD matrices."""
    parts = []
    mains = [r for r in results if r["settings"]["profile"] == "main"]
    for res in results:
        s = res["settings"]
        parts.append(f"### {s['dataset']} x {s['backbone']}: {s['profile']}"
                     + ("" if res.get("complete", True) else " (unfinished: not every stage ran)"))
        parts.append(select_table(res) if s["profile"] == "select" else main_table(res))
        parts += same_run_notes(res) if s["profile"] == "main" else []
    if mains:
        parts += ["### R@1, dataset x method", dataset_method_table(mains)]
        for bb, per in matrix(mains).items():
            parts += [f"### OOD matrix, {bb}", ood_table(per)]
    return "\n\n".join(parts) + "\n"


def figure(results: list[dict[str, Any]], path: Path) -> Path:
    """ID R@1 gain against mean OOD R@1 change (both against the frozen row), per (dataset, method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    markers = "osD^v"
    mains = [r for r in results if r["settings"]["profile"] == "main"]
    for i, (bb, per) in enumerate(matrix(mains).items()):
        for ds, rows in per.items():
            pts = [r for r in rows
                   if r["name"] != "frozen" and r["id_gain"] is not None and r["ood_change"] is not None]
            ax.scatter([r["id_gain"] for r in pts], [r["ood_change"] for r in pts], marker=markers[i % len(markers)],
                       label=f"{ds}, {bb}")
            for r in pts:
                ax.annotate(r["name"], (r["id_gain"], r["ood_change"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xlabel("ID R@1 gain over frozen (points)")
    ax.set_ylabel("mean OOD R@1 change from frozen (points)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return C.save_figure(fig, path)
