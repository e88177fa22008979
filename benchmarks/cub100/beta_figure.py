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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--val", required=True, help="result JSON of --profile beta_val")
    ap.add_argument("--test", required=True, help="result JSON with the beta ablation (--profile full)")
    ap.add_argument("--plot", default=str(C.REPO / "docs" / "cub100_beta.png"))
    ap.add_argument("--notes", default=None, help="a markdown file appended to the section")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)
    val = curve(json.loads(Path(args.val).read_text()), ("beta_val",))
    test = test_curve(json.loads(Path(args.test).read_text()))
    if not val:
        raise SystemExit(f"{args.val}: no beta_val rows")
    chosen = max(val, key=lambda b: (val[b]["mapr"], val[b]["r1"]))

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
    fig.savefig(args.plot, dpi=90, bbox_inches="tight")
    plt.close(fig)

    rows = [[f"{b:g}" + (" (chosen)" if b == chosen else ""),
             *(f"{d[b][k]:.1f}" if b in d else "-" for d in (val, test) for k in ("r1", "mapr"))] for b in betas]
    vres, tres = (json.loads(Path(f).read_text()) for f in (args.val, args.test))
    body = (f"Made by `python benchmarks/cub100/beta_figure.py --val {args.val} --test {args.test}`. Validation: "
            f"`{C.current_command(vres['command'])}` ({vres['date']}); test: `{C.current_command(tres['command'])}` "
            f"({tres['date']}). MobileNetV2, 224 px, the demo's adapters (rank 4, pw+pwl, last two stages), one "
            "seed (0) per point. Validation: train on classes 0-39, retrieve among 40-49 (184 steps); test: "
            "train on 0-49, retrieve among 50-99 (2 epochs = 184 steps); beta = 0 is ICA + OPA (object and "
            "background views, no distillation). beta is chosen by validation MAP@R, then read on test.\n\n"
            + C.md_table(["beta", "val R@1", "val MAP@R", "test R@1", "test MAP@R"], rows)
            + f"\n\n![R@1 and MAP@R against beta]({Path(args.plot).name})\n\n"
            f"Chosen on validation MAP@R: **beta = {chosen:g}**.\n")
    if args.notes:
        body += "\n" + Path(args.notes).read_text().strip() + "\n"
    print(body)
    if not args.no_doc:
        C.update_doc(C.DOC, SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
