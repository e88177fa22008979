"""The defaults and frontier regions of the docs (benchmarks/{defaults,frontier}/docs.py): rendered from the
JSON, absent results said so, a stray region or an edited number caught."""
from __future__ import annotations

import json

from benchmarks import _common as C
from benchmarks.defaults import docs as DD
from benchmarks.frontier import docs as FD


def test_put_and_get_region_round_trip_and_place_a_section():
    doc = "# T\n\n## A\n\ntext\n"
    out = C.put_region(doc, "r", "body 1", "## B")
    assert C.get_region(out, "r").strip() == "body 1" and out.startswith(doc.rstrip("\n"))
    assert C.get_region(C.put_region(out, "r", "body 2"), "r").strip() == "body 2"
    assert C.get_region(doc, "r") is None


def test_readme_bodies_say_not_measured_without_results():
    assert "not measured yet" in DD.readme_body(None) and "not measured yet" in DD.budget_body(None)
    assert "not measured yet" in FD.readme_body([])


def test_the_presets_table_is_rendered_from_the_runs():
    from benchmarks.defaults import plan as DP

    runs = [{"preset": "mobilenetv2", "dataset": "cub100", "test_frozen": {"recall@1": 0.791},
             "test_trained": {"recall@1": 0.83}, "settings_digest": DP.current_digest("mobilenetv2", "cub100")},
            {"preset": "lite2", "dataset": "pets37", "test_frozen": {"recall@1": 0.5}, "test_trained": None}]
    body = DD.readme_body({"runs": runs})
    assert "| mobilenetv2 | 79.1 -> 83.0 | - |" in body and "| lite2 | - | - |" in body and "*" not in body
    # A run of another preset (or default) than the packaged one is marked, and the mark explained.
    runs[0]["settings_digest"] = "0" * 8
    body = DD.readme_body({"runs": runs})
    assert "| mobilenetv2 | 79.1 -> 83.0 * | - |" in body and "earlier preset" in body


def test_a_region_without_its_json_is_flagged(tmp_path, monkeypatch):
    # No frontier result: the README region must be the "not measured" line, and a BENCHMARKS
    # region would be stray.
    monkeypatch.setattr(FD.C, "DOC", tmp_path / "B.md")
    monkeypatch.setattr(FD, "README", tmp_path / "R.md")
    (tmp_path / "B.md").write_text(C.put_region("# B\n", FD.BENCH_REGION, "old", FD.HEADING))
    (tmp_path / "R.md").write_text(C.put_region(f"<!-- rendered: {FD.README_REGION} -->\n"
                                                f"<!-- /rendered: {FD.README_REGION} -->\n", FD.README_REGION,
                                                FD.readme_body([])))
    problems = FD.check(tmp_path / "none")
    assert len(problems) == 1 and "its result is not" in problems[0]
    (tmp_path / "R.md").write_text((tmp_path / "R.md").read_text().replace("not measured yet", "measured"))
    assert len(FD.check(tmp_path / "none")) == 2


def test_the_docs_match_the_committed_results():
    assert DD.check() == [] and FD.check() == []


def test_committed_defaults_budget_result_renders_its_choices():
    from benchmarks.defaults import budget as B

    result = json.loads(B.RESULT.read_text())  # committed: the evidence for AUTO_STEPS
    body = DD.budget_body(result)
    rows = [r for r in result["rows"] if not r["stage_missing"]]
    assert rows
    for r in rows:  # each pair's chosen budget is a row of the per-pair table, marked when the grid's largest
        top = r["chosen_steps"] == max(c["steps"] for c in r["candidates"])
        cell = f"| {r['chosen_steps']}{' (largest tried)' if top else ''} |"
        assert any(line.startswith(f"| {r['dataset']} | {r['backbone']} |") and cell in line
                   for line in body.splitlines()), (r["dataset"], r["backbone"])
    assert body.count("**chosen**") == sum(c["chosen"] for r in rows for c in r["candidates"])
