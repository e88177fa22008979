"""The frontier benchmark in docs/BENCHMARKS.md (section, tables, figures) and README.md (its words), from the JSON.

The BENCHMARKS section appears with the first result under ``benchmarks/results/frontier/``; the
README region says in one line that nothing is measured until then. From the repository root:

    python -m benchmarks.frontier.docs            # rewrite the regions and figures from the JSON
    python -m benchmarks.frontier.docs --check    # compare only (exit 1 on a difference; the tests run it)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import _common as C
from benchmarks.cub100 import quantities as Q
from benchmarks.frontier import render as R
from benchmarks.frontier.run import RESULTS

README = C.REPO / "README.md"
HEADING = "## The frontier: in distribution against out of distribution, over budgets and alphas (WiSE-FT)"
BENCH_REGION, README_REGION = "frontier", "frontier-words"


def load(folder: Path = RESULTS) -> list[dict[str, Any]]:
    """Every frontier result, sorted by file name."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def readme_body(results: list[dict[str, Any]]) -> str:
    """The README's words: the frontier comparison, the recommended DVA point and the recommended points
    side by side, per result."""
    if not results:
        return ("The frontier (ID against OOD R@1 over budgets and alphas, against the full fine-tune with WiSE-FT): "
                "not measured yet (`python -m benchmarks.frontier.run`; docs/BENCHMARKS.md).")
    out = []
    for res in results:
        s, sm = res["settings"], R.summary(res)
        part = R.status_tag(res)
        out.append(f"- {s['dataset']} x {s['backbone']}{part}:")
        out.append("  " + R.frontier_words(res, sm).removeprefix("- "))
        out.append("  " + R.target2_words(res, sm).removeprefix("- "))
        if (rec := R.recommended_words(res)) is not None:
            out.append("  " + rec.removeprefix("- "))
    return "The frontier (docs/BENCHMARKS.md, \"The frontier\"):\n\n" + "\n".join(out)


def regions(results: list[dict[str, Any]]) -> list[tuple[Path, str, str | None, str | None]]:
    """``(doc, region, heading, body)``; body None: no result yet, the region stays out."""
    return [(C.DOC, BENCH_REGION, HEADING, R.render_section(results) if results else None),
            (README, README_REGION, None, readme_body(results))]


def check(folder: Path = RESULTS) -> list[str]:
    """Every difference between the docs' regions and their rendering from the JSON."""
    return C.check_regions(regions(load(folder)), Q.compare, "python -m benchmarks.frontier.docs")


def main(argv: list[str] | None = None) -> int:
    """Write the regions and figures from the JSON, or ``--check`` them."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.frontier.docs", description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 when the docs differ")
    args = ap.parse_args(argv)
    if args.check:
        problems = check()
        print("\n".join(problems) or "the frontier regions match the JSON")
        return 1 if problems else 0
    results = load()
    if results:
        R.figures(results, C.REPO / "docs")
    for name in C.write_regions(regions(results)):
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
