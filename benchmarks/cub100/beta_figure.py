#!/usr/bin/env python
"""The DPT weight beta, as the paper's Fig. 3: chosen on the validation split, then read on test.

Reads the validation rows (``--profile beta_val``: train classes 0-39, retrieve 40-49) and the
test rows (the ``beta`` ablation of ``--profile full`` plus ICA + OPA, which is beta = 0), picks
beta by validation MAP@R (R@1 of 600 validation queries moves by 0.17 per query and ties often),
and draws R@1 and MAP@R against beta for both splits, the chosen value marked.

    python benchmarks/cub100/beta_figure.py --val benchmarks/results/cub100_beta_val.json \
        --test benchmarks/results/cub100_full.json

Writes ``docs/cub100_beta.png`` and the section named in ``SECTION`` of docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import _common as C

SECTION = "## DPT weight beta: chosen on validation, read on test (the paper's Fig. 3)"


def _beta(row: dict[str, Any]) -> float | None:
    """The row's ``--loss.beta`` (1 when not overridden: the default), None for a non-DVA row."""
    ov = row["overrides"]
    if not row.get("trainable_params") or "--opa.enabled" in ov or "--train.trainable" in ov:
        return None
    return float(ov[ov.index("--loss.beta") + 1]) if "--loss.beta" in ov else 1.0


def curve(result: dict[str, Any], groups: tuple[str, ...]) -> dict[float, dict[str, float]]:
    """beta -> {R@1, MAP@R} (first seed's mean as stored) of the rows in ``groups``."""
    out: dict[float, dict[str, float]] = {}
    for row in result["rows"]:
        b = _beta(row) if row["group"] in groups else None
        if b is not None and b not in out:
            s = row["stats"]
            out[b] = {"r1": s["recall@1"][0], "mapr": s["map@r"][0], "seeds": len(row["seeds"])}
    return dict(sorted(out.items()))


def test_curve(result: dict[str, Any]) -> dict[float, dict[str, float]]:
    """Test side: the beta ablation (seed 0) plus ICA + OPA (beta 0) and DVA (beta 1), first seed only."""
    out: dict[float, dict[str, float]] = {}
    for row in result["rows"]:
        if row["group"] not in ("beta", "main"):
            continue
        b = _beta(row)
        if b is None or b in out:
            continue
        run = row["runs"][0]  # seed 0, like the ablation rows
        out[b] = {"r1": 100 * run["metrics"]["recall@1"], "mapr": 100 * run["metrics"]["map@r"], "seeds": 1}
    return dict(sorted(out.items()))


def choose(val: dict[float, dict[str, float]]) -> float:
    """beta by validation MAP@R (R@1 breaks a tie)."""
    return max(val, key=lambda b: (val[b]["mapr"], val[b]["r1"]))


def plot(val: dict[float, dict[str, float]], test: dict[float, dict[str, float]], chosen: float, path: Path) -> None:
    """R@1 and MAP@R against beta for both splits, each against its own beta = 0, the chosen value marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The splits differ by ~13 R@1 points: plot each against its own beta = 0 (ICA + OPA) so that
    # the shapes can be compared; the absolute values are in the table.
    betas = sorted(set(val) | set(test))
    pos = {b: i for i, b in enumerate(betas)}
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, key, name in ((axes[0], "r1", "R@1"), (axes[1], "mapr", "MAP@R")):
        for data, label, style in ((val, "validation (classes 40-49)", "o-"), (test, "test (classes 50-99)", "s--")):
            xs = list(data)
            base = data[xs[0]][key]
            ax.plot([pos[b] for b in xs], [data[b][key] - base for b in xs], style,
                    label=f"{label}; beta {xs[0]:g}: {base:.1f}")
        ax.set_xticks(range(len(betas)), [f"{b:g}" for b in betas])
        ax.axvline(pos[chosen], color="grey", lw=0.8, ls=":")
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xlabel("DPT weight beta (0 = ICA + OPA)")
        ax.set_ylabel(f"{name} change against beta 0 (points)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"cub100, MobileNetV2: beta chosen on validation MAP@R = {chosen:g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def quantities(val: dict[float, dict[str, float]], test: dict[float, dict[str, float]],
               test_result: dict[str, Any]) -> dict[str, Any]:
    """The named quantities the notes quote (benchmarks.cub100.quantities): per split and beta ``beta.val.b1.r1``
    (``b0_5`` for 0.5), ``.map``; per split the ``min``/``max`` of ``r1``/``map``; ``beta.chosen``; the validation
    margin of the chosen beta (``beta.val.map.margin``); the test MAP@R peak (``beta.test.map.peak_beta``); the
    smallest and largest R@1 step between neighbouring test betas; the test file's main rows as ``full.*``."""
    from benchmarks.cub100 import quantities as Q

    chosen = choose(val)
    q: dict[str, Any] = {"beta.chosen": chosen, "beta.val.one_query": 100 / 600}
    for split, d in (("val", val), ("test", test)):
        for b, v in d.items():
            name = f"beta.{split}.b" + f"{b:g}".replace(".", "_")  # b0, b0_5, b1
            q[f"{name}.r1"], q[f"{name}.map"] = v["r1"], v["mapr"]
        for m, k in (("r1", "r1"), ("map", "mapr")):
            vals = [v[k] for v in d.values()]
            q[f"beta.{split}.{m}.min"], q[f"beta.{split}.{m}.max"] = min(vals), max(vals)
    q["beta.val.map.margin"] = val[chosen]["mapr"] - max(v["mapr"] for b, v in val.items() if b != chosen)
    q["beta.test.map.peak_beta"] = max(test, key=lambda b: test[b]["mapr"])
    steps = [abs(test[b2]["r1"] - test[b1]["r1"]) for b1, b2 in zip(list(test), list(test)[1:])]
    q["beta.test.r1.step_min"], q["beta.test.r1.step_max"] = min(steps), max(steps)
    q.update(Q.result_quantities("full", test_result, Q.QUERIES["cub100"]))
    return q


def section_body(val_path: str, test_path: str, plot_name: str = "cub100_beta.png", notes: str | None = None) -> str:
    """The section: how it was made, the table, the figure, the chosen beta, the notes template filled."""
    from benchmarks.cub100 import quantities as Q

    # Paths as given (the working folder), else from the repository root (the docs' published inputs).
    vres, tres = (json.loads((Path(f) if Path(f).exists() else C.REPO / f).read_text()) for f in (val_path, test_path))
    val, test = curve(vres, ("beta_val",)), test_curve(tres)
    if not val:
        raise SystemExit(f"{val_path}: no beta_val rows")
    chosen = choose(val)
    rows = [[f"{b:g}" + (" (chosen)" if b == chosen else ""),
             *(f"{d[b][k]:.1f}" if b in d else "-" for d in (val, test) for k in ("r1", "mapr"))]
            for b in sorted(set(val) | set(test))]
    body = (f"Made by `python -m benchmarks.cub100.beta_figure --val {val_path} --test {test_path}`. Validation: "
            f"`{C.current_command(vres['command'])}` ({vres['date']}); test: `{C.current_command(tres['command'])}` "
            f"({tres['date']}). MobileNetV2, 224 px, the demo's adapters (rank 4, pw+pwl, last two stages), one "
            "seed (0) per point. Validation: train on classes 0-39, retrieve among 40-49 (184 steps); test: "
            "train on 0-49, retrieve among 50-99 (2 epochs = 184 steps); beta = 0 is ICA + OPA (object and "
            "background views, no distillation). beta is chosen by validation MAP@R, then read on test.\n\n"
            + C.md_table(["beta", "val R@1", "val MAP@R", "test R@1", "test MAP@R"], rows)
            + f"\n\n![R@1 and MAP@R against beta]({plot_name})\n\n"
            f"Chosen on validation MAP@R: **beta = {chosen:g}**.\n")
    if notes:
        path = Path(notes) if Path(notes).exists() else C.REPO / notes
        body += "\n" + Q.fill(path.read_text(), quantities(val, test, tres), notes).strip() + "\n"
    return body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cub100.beta_figure", description=__doc__.split("\n")[0])
    ap.add_argument("--val", required=True, help="result JSON of --profile beta_val")
    ap.add_argument("--test", required=True, help="result JSON with the beta ablation (--profile full)")
    ap.add_argument("--plot", default=str(C.REPO / "docs" / "cub100_beta.png"))
    ap.add_argument("--notes", default=None, help="a notes template appended to the section (its placeholders: "
                                                    "``quantities``)")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)
    val = curve(json.loads(Path(args.val).read_text()), ("beta_val",))
    if val:
        plot(val, test_curve(json.loads(Path(args.test).read_text())), choose(val), Path(args.plot))
    body = section_body(args.val, args.test, Path(args.plot).name, args.notes)
    print(body)
    if not args.no_doc:
        C.update_doc(C.DOC, SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
