"""The defaults benchmark in the docs: docs/BENCHMARKS.md (the default command per preset x dataset),
docs/METHOD.md (the step-budget evidence) and README.md (the presets' figures), from the JSON.

A region whose JSON is not there yet says so in one line (the METHOD and README regions) or is
left out (the BENCHMARKS section, added with its first result). The tuned DVA column is read from
the datasets harness's result files each time (a main profile that landed after the defaults ran
fills it; writing also updates those fields of the defaults JSON). From the repository root:

    python -m benchmarks.defaults.docs            # rewrite the regions from the JSON
    python -m benchmarks.defaults.docs --check    # compare only (exit 1 on a difference; the tests run it)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import _common as C
from benchmarks.cub100 import quantities as Q
from benchmarks.defaults import budget as B
from benchmarks.defaults import plan as DP
from benchmarks.defaults import presets as PR
from benchmarks.defaults import render as V
from benchmarks.defaults.run import RESULT, refresh

METHOD, README = C.REPO / "docs" / "METHOD.md", C.REPO / "README.md"
HEADING = "## The default command: every preset on every dataset (defaults profile)"
BENCH_REGION, BUDGET_REGION, README_REGION = "defaults", "budget-evidence", "presets-table"
PRESET_REGION = "preset-evidence"


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def budget_body(result: dict[str, Any] | None) -> str:
    """METHOD's evidence for ``AUTO_STEPS``, or the line saying it is not measured yet."""
    if result is None:
        return "The evidence is not measured yet (`python -m benchmarks.defaults.budget --run-pets37`)."
    return ("Budgets chosen on validation (held-out training classes; `python -m benchmarks.defaults.budget`, "
            f"`{C.repo_relative(B.RESULT)}`):\n\n" + B.render_budget(result))


def preset_body(choices: dict[str, dict[str, Any]]) -> str:
    """METHOD's evidence for the presets chosen on every ID dataset's validation split."""
    if not choices:
        return ("No preset is chosen on the three ID datasets yet (their select profiles: "
                "`python -m benchmarks.datasets.run --profile select`).")
    return "\n\n".join(PR.render(rec, preset) for preset, rec in choices.items())


def bench_body(result: dict[str, Any]) -> str:
    """The BENCHMARKS section: the command, then the rendered table, notes and targets."""
    return ("`dva train --preset P --data.dataset D --data.root R`, nothing else (the thread count and a shared "
            "prefix-cache folder aside), per preset and dataset; `python -m benchmarks.defaults.run`, "
            f"`{C.repo_relative(RESULT)}`.\n\n" + V.render_section(result))


def readme_body(result: dict[str, Any] | None) -> str:
    """The README's preset table: test R@1 frozen -> default command, per preset and dataset."""
    if result is None:
        return ("Figures per preset: not measured yet (`python -m benchmarks.defaults.run`; docs/BENCHMARKS.md, "
                "the default command).")
    runs = result["runs"]
    presets = list(dict.fromkeys(r["preset"] for r in runs))
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    by = {(r["preset"], r["dataset"]): r for r in runs}

    def cell(p: str, d: str) -> str:
        r = by.get((p, d))
        if r is None:
            return "-"
        f, t = (r.get("test_frozen") or {}).get("recall@1"), (r.get("test_trained") or {}).get("recall@1")
        return "-" if f is None or t is None else f"{100 * f:.1f} -> {100 * t:.1f}" + ("" if DP.is_current(r) else " *")

    rows = [[p, *[cell(p, d) for d in datasets]] for p in presets]
    older = any(c.endswith(" *") for row in rows for c in row)
    return ("Test R@1, frozen -> the default command (`dva train --preset P --data.root ...`; docs/BENCHMARKS.md, "
            "the default command):\n\n" + C.md_table(["preset", *datasets], rows, "l" + "r" * len(datasets))
            + ("\n\n\\* made with an earlier preset or default than the one packaged now; to be run again."
               if older else ""))


def figures_text(result: dict[str, Any] | None) -> str:
    """The packaged figures ``dva train --help`` shows (``dva.config.PRESET_FIGURES``): test R@1 frozen
    and trained per preset and dataset, percent to 0.1, of the runs made with the packaged preset only."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in (result or {}).get("runs") or []:
        f, t = (r.get("test_frozen") or {}).get("recall@1"), (r.get("test_trained") or {}).get("recall@1")
        if f is not None and t is not None and DP.is_current(r):
            out.setdefault(r["preset"], {})[r["dataset"]] = [round(100 * f, 1), round(100 * t, 1)]
    return json.dumps(out, indent=1) + "\n"


def regions() -> list[tuple[Path, str, str | None, str | None]]:
    """``(doc, region, heading, body)`` of each region (body None: no result, the region stays out)."""
    res, bud = _load(RESULT), _load(B.RESULT)
    res = refresh(res) if res else None  # the tuned rows as the datasets harness's results hold them now
    return [(C.DOC, BENCH_REGION, HEADING, bench_body(res) if res else None),
            (METHOD, BUDGET_REGION, None, budget_body(bud)),
            (METHOD, PRESET_REGION, None, preset_body(PR.choices())),
            (README, README_REGION, None, readme_body(res))]


def check() -> list[str]:
    """Every difference between the docs' regions (and the packaged figures) and their rendering from the JSON."""
    from dva.config import PRESET_FIGURES

    out = C.check_regions(regions(), Q.compare, "python -m benchmarks.defaults.docs")
    res = _load(RESULT)
    if res and refresh(res) != res:
        out.append(f"{C.repo_relative(RESULT)}: its tuned rows are older than the datasets harness's results "
                   "(python -m benchmarks.defaults.docs reads them again)")
    have = PRESET_FIGURES.read_text() if PRESET_FIGURES.is_file() else None
    if have != figures_text(_load(RESULT)):
        out.append(f"{C.repo_relative(PRESET_FIGURES)}: differs from the defaults JSON (python -m benchmarks.defaults.docs)")
    return out


def main(argv: list[str] | None = None) -> int:
    """Write the regions from the JSON, or ``--check`` them."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.defaults.docs", description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 when the docs differ")
    args = ap.parse_args(argv)
    if args.check:
        problems = check()
        print("\n".join(problems) or "the defaults regions match the JSON")
        return 1 if problems else 0
    res = _load(RESULT)
    if res and refresh(res) != res:
        C.write_json(RESULT, refresh(res))
        print(f"wrote {C.repo_relative(RESULT)} (its tuned rows, from the datasets harness's results)")
    for name in C.write_regions(regions()):
        print(f"wrote {name}")
    from dva.config import PRESET_FIGURES

    C.write_text(PRESET_FIGURES, figures_text(_load(RESULT)))
    print(f"wrote {C.repo_relative(PRESET_FIGURES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
