"""benchmarks/domains: the "Domains" section of docs/BENCHMARKS.md is the rendering of its JSON."""
from __future__ import annotations

import copy
import json

import pytest

from benchmarks import _common as C
from benchmarks.domains import render

RESULT = C.RESULTS / "domains.json"


@pytest.fixture(scope="module")
def result() -> dict:
    if not RESULT.is_file():
        pytest.skip("benchmarks/results/domains.json not written yet (python -m benchmarks.domains.run)")
    return json.loads(RESULT.read_text())


def _section(doc: str) -> str:
    lines = doc.splitlines()
    start = lines.index(render.SECTION)
    end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), len(lines))
    return "\n".join(lines[start + 1:end]).strip()


def test_the_doc_section_is_the_rendering_of_the_json(result):
    assert _section(C.DOC.read_text()) == render.markdown(result).strip()


def test_the_verdicts_follow_the_numbers(result):
    md = render.markdown(result)
    one = result["servers"]["single"][next(iter(result["servers"]["single"]))]
    worse = copy.deepcopy(result)
    worse["servers"]["multi"]["4"]["rss_after_mb"] = one["rss_after_mb"] * 1.3
    worse["servers"]["multi"]["4"]["latency"]["all"]["p50_ms"] = one["latency"]["one"]["p50_ms"] * 2.5
    bad = render.markdown(worse)
    sv = result["servers"]
    mem_ok = sv["multi"]["4"]["rss_after_mb"] <= 1.2 * one["rss_after_mb"]
    lat_ok = sv["multi"]["4"]["latency"]["all"]["p50_ms"] <= 2 * one["latency"]["one"]["p50_ms"]
    assert f"it {'meets' if mem_ok else 'misses'} the target (<= 1.2x)" in md
    assert f"it {'meets' if lat_ok else 'misses'} the target (<= 2x)" in md
    assert "1.30x the memory" in bad and "it misses the target (<= 1.2x)" in bad
    assert "2.50x the p50" in bad and "it misses the target (<= 2x)" in bad
