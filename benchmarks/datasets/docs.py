"""The "Six datasets" section of docs/BENCHMARKS.md and the README's dataset x method table, from the JSON.

Every number and every derived word ("holds", "behind", a gap closed) is computed here from the
profiles' result files under ``benchmarks/results/datasets/``; a pair not run yet is named as such.
The regions sit between ``<!-- rendered: six-datasets -->`` / ``<!-- /rendered: six-datasets -->``
(docs/BENCHMARKS.md) and ``<!-- rendered: datasets-table -->`` (README.md). From the repository root:

    python -m benchmarks.datasets.docs            # rewrite both regions (and the figure) from the JSON
    python -m benchmarks.datasets.docs --check    # compare only (exit 1 on a difference; the tests run it)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import _common as C
from benchmarks.cub100 import quantities as Q
from benchmarks.datasets import render as R
from benchmarks.datasets.ood import gap_closed, matrix, matrix_rows
from benchmarks.datasets.plan import TABLE

RESULTS = C.RESULTS / "datasets"
FIGURE = C.REPO / "docs" / "datasets_ood.png"
README = C.REPO / "README.md"
HEADING = "## Six datasets: three in distribution, three out (the datasets harness)"
DOC_REGION, README_REGION = "six-datasets", "datasets-table"
# The targets (docs/BENCHMARKS.md states which hold): DVA's R@1 gain over frozen with the
# MobileNetV2 on the datasets where the frozen features are weak; the share of the frozen-to-full gap
# closed on every ID dataset by at least one backbone; DVA's mean OOD R@1 against the full fine-tune
# and within a margin of frozen.
TARGET_GAIN = {"datasets": ("cars196", "aircraft47"), "backbone": "mobilenetv2", "points": 10.0}
TARGET_GAP_PCT = 80.0
TARGET_OOD_MARGIN = 1.0
# The backbones of the study of methods and its targets: those whose main profile runs every row
# (harness.yaml; Lite0 and Lite1 run the frozen and DVA rows only, for their presets).
STUDY_BACKBONES = [b for b, spec in TABLE.backbones.items() if set(spec.main_rows) == set(TABLE.main_rows)]


def load_results(folder: Path = RESULTS) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The select and main results found under ``folder``, in harness order (dataset, then backbone)."""
    order = {(d, b): i for i, (d, b) in enumerate((d, b) for d in TABLE.datasets for b in TABLE.backbones)}
    found = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    found.sort(key=lambda r: order.get((r["settings"]["dataset"], r["settings"]["backbone"]), len(order)))
    return ([r for r in found if r["settings"]["profile"] == "select"],
            [r for r in found if r["settings"]["profile"] == "main"])


def _pct(m: dict[str, Any] | None, key: str) -> float | None:
    return None if not m or key not in m else 100.0 * float(m[key])


def chosen_table(selects: list[dict[str, Any]]) -> str:
    """One line per select result: the value chosen at each stage and the validation scores, frozen -> chosen."""
    stages = [st.name for st in TABLE.stages]
    body = []
    for res in selects:
        s, by = res["settings"], {st["name"]: st for st in res["stages"]}
        last = res["stages"][-1] if res["stages"] else None
        best = next((c for c in last["candidates"] if c["chosen"]), None) if last else None
        fz, ch = res.get("frozen_val_metrics"), (best or {}).get("val_metrics")
        body.append([s["dataset"], s["backbone"], str(s.get("val_classes", "-")),
                     *[(by[n]["chosen"] + (" (margin)" if by[n].get("chosen_by") == "margin" else ""))
                       if n in by else "(not run)" for n in stages],
                     f"{R.num(_pct(fz, 'recall@1'))} -> {R.num(_pct(ch, 'recall@1'))}",
                     f"{R.num(_pct(fz, 'map@r'))} -> {R.num(_pct(ch, 'map@r'))}",
                     "yes" if res.get("complete") else "no"])
    header = ["ID dataset", "backbone", "held-out classes", *stages, "val R@1 frozen -> chosen",
              "val MAP@R frozen -> chosen", "all stages run"]
    return C.md_table(header, body, "lll" + "l" * len(stages) + "rrl") + "".join(
        f"\n\n{line}" for line in margin_lines(selects))


def margin_lines(selects: list[dict[str, Any]]) -> list[str]:
    """One sentence per stage where a dear candidate scored best but by less than the margin."""
    out = []
    for res in selects:
        s = res["settings"]
        for st in res["stages"]:
            if st.get("chosen_by") != "margin":
                continue
            m = {c["name"]: 100 * c["val_metrics"]["map@r"] for c in st["candidates"]}
            top = max((c for c in st["candidates"] if c["dear"]), key=lambda c: c["val_metrics"]["map@r"])["name"]
            out.append(f"(margin) {s['dataset']} x {s['backbone']}, {st['name']}: {top} (adapters below the cached "
                       f"prefix) led {st['chosen']} by {m[top] - m[st['chosen']]:.2f} MAP@R points on validation, under "
                       f"the {100 * st['dear_margin']:.1f} that such a candidate needs: {st['chosen']} was kept.")
    return out


def _r1(rows: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["name"] == name), None)


def _seed_sd(res: dict[str, Any] | None, name: str, key: str = "recall@1") -> float | None:
    """The sample SD over the seeds of row ``name`` (percent); None for a row of one seed (or none)."""
    row = R._row(res, name) if res else None
    return float(row["stats"][key][1]) if row and len(row["seeds"]) > 1 else None


def _by_pair(mains: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["settings"]["backbone"], r["settings"]["dataset"]): r for r in mains}


def targets(mains: list[dict[str, Any]]) -> list[str]:
    """The three targets, each: holds / does not hold / not measured yet, with the figures behind it."""
    mat, pairs = matrix(mains), _by_pair(mains)
    out = []
    bb, pts = TARGET_GAIN["backbone"], TARGET_GAIN["points"]
    parts, verdicts = [], []
    for ds in TARGET_GAIN["datasets"]:
        rows = mat.get(bb, {}).get(ds)
        dva = rows and _r1(rows, "dva")
        if not dva or dva["id_gain"] is None:
            parts.append(f"{ds}: not measured yet")
            verdicts.append(None)
            continue
        full = _r1(rows, "full")
        # The full fine-tune's own gain, where measured: a target above it asks more than training every weight gives.
        ref = "" if not full or full.get("id_gain") is None else f" (the full fine-tune {R.num(full['id_gain'], signed=True)})"
        parts.append(f"{ds} {R.num(dva['id_gain'], signed=True)}{ref}")
        verdicts.append(dva["id_gain"] >= pts)
    out.append(f"DVA at least +{pts:.0f} R@1 over frozen on {' and '.join(TARGET_GAIN['datasets'])} with {bb}: "
               f"{_verdict(verdicts)} ({'; '.join(parts)}).")
    parts, verdicts = [], []
    for ds in TABLE.datasets:
        gaps = []
        for b, per in mat.items():
            rows = per.get(ds)
            if rows and _r1(rows, "dva") and _r1(rows, "full") and _r1(rows, "frozen"):
                fz, fu = _r1(rows, "frozen")["id_r1"], _r1(rows, "full")["id_r1"]
                g = gap_closed(_r1(rows, "dva")["id_r1"], fz, fu)
                if g is not None:
                    sd = _seed_sd(pairs.get((b, ds)), "dva")
                    # DVA's seed SD in points of the gap: how far the share moves with the seed.
                    gaps.append((g, b, None if sd is None else 100.0 * sd / (fu - fz)))
        if not gaps:
            parts.append(f"{ds}: not measured yet")
            verdicts.append(None)
            continue
        g, b, spread = max(gaps)
        parts.append(f"{ds} best {g:.0f}% ({b}" + ("" if spread is None else f"; DVA's seed SD is {spread:.0f} points "
                                                    "of the gap") + ")")
        verdicts.append(g >= TARGET_GAP_PCT)
    out.append(f"DVA closes at least {TARGET_GAP_PCT:.0f}% of the frozen-to-full-fine-tune R@1 gap on every ID "
               f"dataset, on at least one backbone: {_verdict(verdicts)} ({'; '.join(parts)}).")
    parts, verdicts = [], []
    for b, per in [(b, per) for b, per in mat.items() if b in STUDY_BACKBONES]:
        for ds, rows in per.items():
            dva, full, fz = _r1(rows, "dva"), _r1(rows, "full"), _r1(rows, "frozen")
            if not (dva and full and fz) or None in (dva["mean_ood"], full["mean_ood"], fz["mean_ood"]):
                parts.append(f"{b}/{ds}: not measured")
                verdicts.append(None)
                continue
            ok = dva["mean_ood"] > full["mean_ood"] and dva["mean_ood"] >= fz["mean_ood"] - TARGET_OOD_MARGIN
            parts.append(f"{b}/{ds}: DVA {dva['mean_ood']:.1f}, full {full['mean_ood']:.1f}, frozen {fz['mean_ood']:.1f}")
            verdicts.append(ok)
    n_pairs = len(TABLE.datasets) * len(STUDY_BACKBONES)
    missing = n_pairs - sum(v is not None for v in verdicts)
    if missing:
        verdicts.append(None)
    out.append(f"Mean OOD R@1 of DVA above the full fine-tune's and within {TARGET_OOD_MARGIN:.1f} of frozen for every "
               f"(backbone, ID dataset) pair: {_verdict(verdicts)} ("
               + "; ".join(parts + ([f"{missing} of {n_pairs} pairs not measured yet"] if missing else [])) + ").")
    return out


def _verdict(flags: list[bool | None]) -> str:
    """"does not hold" if any measured case fails; "holds" if all were measured and pass; else "not measured yet"."""
    if any(f is False for f in flags):
        return "**does not hold**"
    if flags and all(f is True for f in flags):
        return "**holds**"
    return "not measured yet" if not any(f is True for f in flags) else "**holds so far** (not every case measured)"


def findings(mains: list[dict[str, Any]]) -> list[str]:
    """One sentence per main result: DVA against frozen and the full fine-tune, in and out of distribution."""
    out, pairs = [], _by_pair(mains)
    for b, per in matrix(mains).items():
        for ds, rows in per.items():
            dva, full, fz = _r1(rows, "dva"), _r1(rows, "full"), _r1(rows, "frozen")
            if not (dva and fz):
                continue
            s = f"{ds}, {b}: DVA R@1 {dva['id_r1']:.1f} against frozen {fz['id_r1']:.1f} ({R.num(dva['id_gain'], signed=True)})"
            if full:
                g = gap_closed(dva["id_r1"], fz["id_r1"], full["id_r1"])
                rel = "ahead of" if dva["id_r1"] > full["id_r1"] else "behind"
                sds = [x for x in (_seed_sd(pairs.get((b, ds)), n) for n in ("dva", "full")) if x is not None]
                # A lead smaller than the larger seed SD of the two rows is said to be one.
                lead = abs(dva["id_r1"] - full["id_r1"])
                noise = f"; within the seed SD, {max(sds):.1f}" if sds and lead < max(sds) else ""
                s += (f", {abs(dva['id_r1'] - full['id_r1']):.1f} {rel} the full fine-tune ({full['id_r1']:.1f}{noise})"
                      + (f": {g:.0f}% of the gap closed" if g is not None else ""))
            if dva["mean_ood"] is not None and fz["mean_ood"] is not None:
                s += f"; mean OOD R@1 {dva['mean_ood']:.1f} ({R.num(dva['ood_change'], signed=True)} from frozen"
                if full and full["mean_ood"] is not None:
                    s += f"; the full fine-tune {R.num(full['ood_change'], signed=True)}"
                s += ")"
            out.append(s + ".")
    return out


def _stage_val(select: dict[str, Any] | None, opa: bool) -> tuple[str, float] | None:
    """The chosen candidate and its validation MAP@R (points) of the last ``opa`` (or last other) select stage."""
    stages = [st for st in (select or {}).get("stages") or [] if (st.get("scope") == "opa") == opa]
    if not stages:
        return None
    c = next((c for c in stages[-1]["candidates"] if c["chosen"]), None)
    m = (c or {}).get("val_metrics") or {}
    return None if "map@r" not in m else (c["name"], 100.0 * float(m["map@r"]))


def _sign(v: float) -> int:
    """-1, 0 or 1 for a difference as printed (one decimal)."""
    return 0 if round(v, 1) == 0 else (1 if v > 0 else -1)


def parts_findings(mains: list[dict[str, Any]], selects: list[dict[str, Any]]) -> list[str]:
    """Per main result: what the object views and DPT add on top of ICA alone, on test and on validation.

    The select profile's adapter, lr and budget stages train ICA alone (OPA off) and its last stage
    DVA with the candidate DPT weights, on the same held-out classes: the two winners' validation
    MAP@R compare OPA on against off where the choice was made; the test rows say whether that order held.
    Differences are of the unrounded means, rounded once; an order is only claimed where the difference
    prints as non-zero and, on test, exceeds DVA's seed SD (ICA alone has one seed).
    """
    sel = {(r["settings"]["dataset"], r["settings"]["backbone"]): r for r in selects}
    out = []
    for res in mains:
        s = res["settings"]
        rows = {n: R._row(res, n) for n in ("ica", "ica_opa", "dva")}
        if not (rows["ica"] and rows["dva"]):
            continue
        n_dva = len(rows["dva"]["seeds"])

        def fig(name: str) -> str:
            r = rows[name]
            n = len(r["seeds"])
            return (f"{R.mean_sd(r['stats']['recall@1'], n)} / {R.mean_sd(r['stats']['map@r'], n)}"
                    + (f" ({n} seeds)" if n > 1 else " (1 seed)" if n_dva > 1 else ""))

        def diff(key: str) -> tuple[float, int]:
            """DVA minus ICA alone, and its sign as a claim: 0 for a printed tie or one within DVA's seed SD."""
            d = rows["dva"]["stats"][key][0] - rows["ica"]["stats"][key][0]
            sd = _seed_sd(res, "dva", key)
            return d, 0 if sd is not None and abs(d) < sd else _sign(d)
        (d_r1, c_r1), (d_map, c_map) = diff("recall@1"), diff("map@r")
        line = (f"{s['dataset']}, {s['backbone']}, the parts (test R@1 / MAP@R): ICA alone {fig('ica')}"
                + (f"; ICA + OPA {fig('ica_opa')}" if rows["ica_opa"] else "") + f"; DVA {fig('dva')}: DVA is "
                f"{R.num(d_r1, signed=True)} R@1 and {R.num(d_map, signed=True)} MAP@R from ICA alone")
        within = [k for k, d, c in (("R@1", d_r1, c_r1), ("MAP@R", d_map, c_map)) if c == 0 and _sign(d) != 0]
        if within:
            line += f" ({' and '.join(within)} within DVA's seed SD)"
        pick = sel.get((s["dataset"], s["backbone"]))
        off, on = _stage_val(pick, False), _stage_val(pick, True)
        if off and on:
            d_val = on[1] - off[1]
            beta = ((pick or {}).get("chosen_tokens") or {}).get("opa") or []
            dpt_off = len(beta) == 2 and beta[0] == "--loss.beta" and float(beta[1]) == 0.0
            order = ("validation could not tell them apart" if _sign(d_val) == 0
                     else "test MAP@R cannot tell them apart" if c_map == 0
                     else "the same order on test MAP@R" if _sign(d_val) == c_map
                     else "the other order on test MAP@R")
            line += (f". On validation (MAP@R decides) DVA at the chosen DPT weight ({on[0]}"
                     + ("; 0: no distillation, so DVA here is ICA + OPA" if dpt_off else "")
                     + f") scored {on[1]:.1f} against ICA alone's {off[1]:.1f} ({R.num(d_val, signed=True)}): {order}")
        if c_r1 * c_map < 0:
            line += "; test R@1 and MAP@R rank the two differently"
        ood = {r["name"]: r["mean_ood"] for r in matrix_rows(res)}
        if ood.get("ica") is not None and ood.get("dva") is not None:
            line += (f". Out of distribution (mean OOD R@1) DVA {ood['dva']:.1f} against ICA alone's {ood['ica']:.1f} "
                     f"({R.num(ood['dva'] - ood['ica'], signed=True)})")
        out.append(line + ".")
    return out


def status(selects: list[dict[str, Any]], mains: list[dict[str, Any]]) -> str:
    """Which (dataset, backbone) pairs have a finished select / main profile, and which are still to run."""
    have_sel = {(r["settings"]["dataset"], r["settings"]["backbone"]): r.get("complete", False) for r in selects}
    have_main = {(r["settings"]["dataset"], r["settings"]["backbone"]) for r in mains}
    body = [[ds, bb, "done" if have_sel.get((ds, bb)) else ("started" if (ds, bb) in have_sel else "to run"),
             ("done" if (ds, bb) in have_main else "to run")
             + ("" if bb in STUDY_BACKBONES else f" ({', '.join(TABLE.backbones[bb].main_rows)} rows: its preset)")]
            for ds in TABLE.datasets for bb in TABLE.backbones]
    return C.md_table(["ID dataset", "backbone", "select profile", "main profile"], body, "llll")


def section(selects: list[dict[str, Any]], mains: list[dict[str, Any]], figure: str | None = None) -> str:
    """The docs region: protocol, progress, choices, tables, OOD matrix, targets and findings."""
    ds_line = ", ".join(f"{n} ({d.coco_class}s; {d.val_classes} of its training classes held out for validation)"
                        for n, d in TABLE.datasets.items())
    parts = [
        f"In distribution: {ds_line}. Out of distribution for a model trained on one of them: the test classes of "
        f"the two others and every image of {', '.join(TABLE.ood_extra)} (leave-one-out), scored without further "
        "training. Per (dataset, backbone) the `select` profile chooses the adapter placement/rank, learning rate, "
        "step budget and DPT weight on that dataset's held-out training classes (the test classes are never loaded); "
        "a candidate with adapters below the cached frozen prefix (every step a full backward pass) is chosen only "
        f"when it leads the best other candidate by at least {100 * TABLE.dear_margin:.1f} MAP@R points. "
        "The `main` profile scores the test classes with those values. Commands: "
        "`python -m benchmarks.datasets.run --dataset D --backbone B --profile select|main`.",
        "**Progress.**", status(selects, mains)]
    if selects:
        parts += ["**Chosen on validation** (stages in order, each on the earlier winners; MAP@R decides):",
                  chosen_table(selects)]
    for res in mains:
        s = res["settings"]
        parts += [f"**{s['dataset']} x {s['backbone']}, test classes** ({s['img_size']} px):", R.main_table(res),
                  *R.same_run_notes(res)]
    if mains:
        parts += ["**R@1, dataset x method:**", R.dataset_method_table(mains)]
        for bb, per in matrix(mains).items():
            parts += [f"**OOD matrix, {bb}** (R@1; mean over the OOD galleries):", R.ood_table(per)]
        if figure:
            parts.append(f"![ID gain against mean OOD change]({figure})")
    parts += ["**Targets.**", "\n".join(f"- {t}" for t in targets(mains))]
    f = findings(mains) + parts_findings(mains, selects)
    if f:
        parts += ["**What this says.**", "\n".join(f"- {x}" for x in f)]
    return "\n\n".join(parts) + "\n"


def readme_table(mains: list[dict[str, Any]]) -> str:
    """The README's dataset x method R@1 table and the findings in words (or a line saying none is measured yet)."""
    if not mains:
        return "No dataset x method table yet: run the datasets harness (docs/BENCHMARKS.md, Six datasets)."
    return ("Test-class R@1 per ID dataset and method (docs/BENCHMARKS.md, \"Six datasets\", with MAP@R, the OOD "
            "matrix, the targets and what the parts add):\n\n" + R.dataset_method_table(mains) + "\n\n"
            + "\n".join(f"- {x}" for x in findings(mains)))


def get(doc: str, region: str, where: str) -> str:
    """The body of ``region`` in ``doc`` (a clear error when the doc lacks it)."""
    body = C.get_region(doc, region)
    if body is None:
        raise ValueError(f"{where}: no region `{region}`; run `python -m benchmarks.datasets.docs`")
    return body


def _figure_link() -> str:
    return C.repo_relative(FIGURE).removeprefix("docs/")


def check(folder: Path = RESULTS, doc: str | None = None, readme: str | None = None) -> list[str]:
    """Every number or line of the two regions that differs from its rendering from the JSON."""
    selects, mains = load_results(folder)
    doc = C.DOC.read_text() if doc is None else doc
    readme = README.read_text() if readme is None else readme
    fig = _figure_link() if mains else None
    return (Q.compare(get(doc, DOC_REGION, "docs/BENCHMARKS.md"), section(selects, mains, fig),
                      f"docs/BENCHMARKS.md [{DOC_REGION}]")
            + Q.compare(get(readme, README_REGION, "README.md"), readme_table(mains), f"README.md [{README_REGION}]"))


def main(argv: list[str] | None = None) -> int:
    """Write the regions (and the figure) from the JSON, or ``--check`` them."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.datasets.docs", description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the profiles' JSON")
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 when the docs differ")
    args = ap.parse_args(argv)
    if args.check:
        problems = check(args.results)
        print("\n".join(problems) or "docs/BENCHMARKS.md [six-datasets] and README.md [datasets-table] match the JSON")
        return 1 if problems else 0
    selects, mains = load_results(args.results)
    if mains:
        R.figure(mains, FIGURE)
    C.write_text(C.DOC, C.put_region(C.DOC.read_text(), DOC_REGION, section(selects, mains, _figure_link() if mains else None),
                            HEADING))
    C.write_text(README, C.put_region(README.read_text(), README_REGION, readme_table(mains)))
    print(f"wrote docs/BENCHMARKS.md [{DOC_REGION}], README.md [{README_REGION}]"
          + (f", {C.repo_relative(FIGURE)}" if mains else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
