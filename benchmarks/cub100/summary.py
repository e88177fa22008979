#!/usr/bin/env python
"""The paper's claims on three backbones: one table and one figure from the cub100 result files.

For each backbone (one result file of ``run.py`` each, main rows), in distribution (cub100 open
set, unseen classes 50-99) and out of distribution (the same saved models on all 370 pets37
photos): R@1, MAP@R, the change against the frozen backbone, and the trainable share. The
figure puts every row of every backbone at its trainable parameter count, ID and OOD R@1.

    python benchmarks/cub100/summary.py \
        benchmarks/results/cub100_ood_seeds.json+benchmarks/results/cub100_ood_quick.json \
        benchmarks/results/cub100_lite2_3st_quick.json \
        benchmarks/results/cub100_vit_s14_8blk_seeds.json+benchmarks/results/cub100_vit_s14_8blk_seeds_fh.json+benchmarks/results/cub100_vit_s14_8blk_quick.json \
        --pets37 benchmarks/results/cub100_pets37_seeds.json+benchmarks/results/cub100_pets37.json \
        benchmarks/results/cub100_lite2_3st_pets37.json benchmarks/results/cub100_vit_s14_8blk_pets37.json

(``--pets37``: the pets37 open set of each backbone, a second table.)

Writes ``docs/cub100_backbones_r1_vs_params.png`` and the section "## Three backbones: in and out
of distribution" of docs/BENCHMARKS.md (``--no-doc``: print only).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # benchmarks/: the shared helpers
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _common as C

SECTION = "## Three backbones: in and out of distribution"
ORDER = ("frozen", "head", "full", "ica", "ica_opa", "dva")
SHORT = {"frozen": "frozen", "head": "head", "full": "full fine-tune", "ica": "ICA", "ica_opa": "ICA + OPA",
         "dva": "DVA"}


def backbone_name(result: dict[str, Any]) -> str:
    from cub100.run import DISPLAY

    s = result["settings"]
    model = s.get("model", "mobilenetv2_100")
    return f"{DISPLAY.get(model, model)}, {s['img_size']} px"


def rows_of(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The main rows by name (stats: mean ± std over the seeds run); a pets37 profile's ``pets_*`` rows too."""
    out = {}
    for r in result["rows"]:
        key = r["name"].removeprefix("pets_") if r["group"] == "pets37" else r["name"]
        if r["group"] in ("main", "pets37") and key in ORDER:
            out[key] = r
    return out


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
                f"{s['recall@1'][0] - f_id:+.1f}" if f_id is not None and key != "frozen" else "-",
                _pm(ood), _pm(s.get("ood_map@r")),
                f"{ood[0] - f_ood:+.1f}" if ood and f_ood is not None and key != "frozen" else "-",
                str(len(r["seeds"])),
            ])
    return C.md_table(["backbone", "row", "trained (% of backbone)", "+ class proxies (training only)", "cub100 R@1", "cub100 MAP@R", "R@1 vs frozen",
                       "pets37 OOD R@1", "pets37 OOD MAP@R", "OOD R@1 vs frozen", "seeds"], cells)


def _label(key: str, r: dict[str, Any]) -> str:
    """The row's short name, flagged when the collapse guard stopped a run (its metrics: the model at the stop)."""
    stops = [run["collapse"]["step"] for run in r["runs"] if run.get("status") == "stopped" and run.get("collapse")]
    return SHORT[key] + (f" (collapsed: guard stop at step {', '.join(map(str, stops))})" if stops else "")


def _d(x: float) -> str:
    return f"{0.0 if abs(x) < 0.05 else x:+.1f}"  # no "-0.0"


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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", help="one cub100 result JSON per backbone ('a.json+b.json': merged)")
    ap.add_argument("--plot", default=str(C.REPO / "docs" / "cub100_backbones_r1_vs_params.png"))
    ap.add_argument("--pets37", nargs="+", default=[], metavar="JSON",
                    help="pets37 open-set results (--profile pets37), one per backbone ('a.json+b.json': merged)")
    ap.add_argument("--notes", default=None, help="a markdown file appended to the section")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args(argv)
    from cub100.run import merge_results

    # "a.json+b.json": one backbone's rows from several files (a row from the first file that has it).
    results = [merge_results([json.loads(Path(p).read_text()) for p in f.split("+")]) for f in args.results]
    pets = [merge_results([json.loads(Path(p).read_text()) for p in f.split("+")]) for f in args.pets37]
    plot(results, Path(args.plot))
    sources = "\n".join(f"- `{src['json']}`: `{C.current_command(src['command'])}` ({src['date']})"
                        for r in results + pets for src in r["sources"])
    made = " ".join(args.results + (["--pets37", *args.pets37] if pets else []))
    body = (f"Made by `python benchmarks/cub100/summary.py {made}` from:\n\n{sources}\n\n"
            "Main rows of each backbone's profile (same input size and training budget for every trained row "
            "of a backbone; details, timings and the per-backbone sections below). In distribution: cub100 open "
            "set, train on classes 0-49, leave-one-out retrieval among the 2,953 photos of classes 50-99. Out of "
            "distribution: the same saved models, without further training, retrieve among all 370 pets37 "
            "photos (37 cat and dog breeds, leave-one-out). Trainable parameters exclude the class proxies "
            "(dropped after training).\n\n" + table(results)
            + f"\n\n![R@1 vs trainable parameters, three backbones]({Path(args.plot).name})\n")
    if pets:
        body += ("\n### pets37 open set (in distribution, full scenes)\n\nTrain on the first 18 breeds (180 photos), "
                 "leave-one-out retrieval among the other 19 (190 photos; one query = 0.53 R@1); object views from "
                 "the yolox detector's cat/dog boxes; 150 steps for every trained row; each backbone's input size "
                 f"as on cub100; {settings_note(results, pets)}.\n\n" + pets_table(pets) + "\n")
    if args.notes:
        body += "\n" + Path(args.notes).read_text().strip() + "\n"
    print(body)
    if not args.no_doc:
        C.update_doc(C.DOC, SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
