"""The numbers of README.md and docs/BENCHMARKS.md are those of benchmarks/results, rendered by code.

Every table and findings sentence rendered by ``benchmarks.cub100.summary`` is re-rendered here
from the JSON and compared with the docs, number by number (rule: a derived figure is computed
from unrounded means and rounded once, the renderer's own code); copies of the docs with one
number or word changed must fail the check.
"""
from __future__ import annotations

import json
import re
import sys

import pytest

from benchmarks import _common as C
from benchmarks.cub100 import quantities as Q
from benchmarks.cub100 import summary as S


@pytest.fixture(scope="module")
def docs() -> dict:
    return {S.README: S.README.read_text(), C.DOC: C.DOC.read_text(), S.METHOD: S.METHOD.read_text()}


def test_the_docs_match_their_rendering_from_the_json(docs):
    assert S.check(texts=docs) == []


def test_every_target_is_found_in_its_doc(docs):
    for t in S.targets():
        assert S.get(docs[t.doc], t).strip(), f"{t.doc.name} [{t.name}] is empty"


def _edit(text: str, old: str, new: str) -> str:
    assert text.count(old) >= 1, f"the doc no longer holds {old!r}: update this test"
    return text.replace(old, new, 1)


def test_a_changed_table_cell_fails_and_is_named_by_row_and_column(docs):
    edited = _edit(docs[S.README], "| **DVA** | 33,152 (1.49%) | **82.8** |", "| **DVA** | 33,152 (1.49%) | **82.9** |")
    problems = S.check(texts={**docs, S.README: edited})
    assert len(problems) == 1
    assert "the doc says 82.9, the JSON gives 82.8" in problems[0]
    assert "column `cub100 R@1 (ID)`" in problems[0] and "README.md [three-backbones]" in problems[0]


def test_a_typed_delta_in_a_findings_sentence_fails(docs):
    # The audit's drift: 1.9 typed from the rounded cells 84.7 - 82.8; the means give 1.83.
    edited = _edit(docs[S.README], "(1.8, 0.7 and 2.1 R@1 behind)", "(1.9, 0.7 and 2.1 R@1 behind)")
    problems = S.check(texts={**docs, S.README: edited})
    assert len(problems) == 1 and "the doc says 1.9, the JSON gives 1.8" in problems[0]


def test_a_changed_word_fails_too(docs):
    # The audit's wrong sentence: the ViT's DVA was one query above the full fine-tune in seed 0.
    edited = _edit(docs[C.DOC], "above the full fine-tune on the mean (+1.9) and in every seed.",
                   "above the full fine-tune on the mean (+1.9) and in seeds 1 and 2, one query below it in seed 0.")
    problems = S.check(texts={**docs, C.DOC: edited})
    assert len(problems) == 1 and "text differs" in problems[0] and "one query below" in problems[0]


def test_a_changed_number_in_the_claims_table_and_the_demo_fail(docs):
    edited = _edit(docs[C.DOC], "| -1.1 / +1.3 (3 seeds) |", "| -1.0 / +1.3 (3 seeds) |")
    assert any("the doc says -1.0, the JSON gives -1.1" in p for p in S.check(texts={**docs, C.DOC: edited}))
    demo = json.loads((C.RESULTS / "demo.json").read_text())
    r1 = f"{100 * list(demo['table'].values())[1]['recall@1']:.1f}"
    edited = _edit(docs[S.README], f"-> {r1},", "-> 99.9,")
    assert any(f"the doc says 99.9, the JSON gives {r1}" in p for p in S.check(texts={**docs, S.README: edited}))


def test_the_audited_drifts_are_computed_from_unrounded_means():
    q = S.default_inputs().quantities()
    assert Q.fill("{mnv2.full.r1 - mnv2.dva.r1:.1f}", q) == "1.8"  # cells 84.7 and 82.8 would give 1.9
    assert Q.fill("{mnv2.dva.r1 - mnv2.ica.r1:+.1f}", q) == "+0.5"
    assert Q.fill("{pets.mnv2.dva.r1 - pets.mnv2.ica.r1:+.1f}", q) == "-1.1"
    assert Q.fill("{vit.dva.map - vit.ica.map:+.1f}", q) == "+1.4"
    assert Q.fill("{vit.dva.r1 - first.dva.r1:+.1f}", q) == "+5.5"
    # Seed 0 of the ViT on pets37: DVA 125 queries right, the full fine-tune 124.
    assert (q["vit.dva.ood_hits.s0"], q["vit.full.ood_hits.s0"]) == (125, 124)
    assert Q.fill("{seeds_vs(vit.dva.ood_r1, vit.full.ood_r1)}", q) == "in every seed"


def test_fill_rounds_once_and_writes_no_negative_zero():
    q = {"a": 84.66, "b": 82.83, "c": 0.04, "n": 3}
    assert Q.fill("{a - b:.1f} behind, {b - a:+.1f}", q) == "1.8 behind, -1.8"
    assert Q.fill("{b - b - c:+.1f} / {b - b - c:.1f} / {n} / {n - 1} / {a}", q) == "+0.0 / 0.0 / 3 / 2 / 84.7"
    assert Q.fill("{-1.0 + a - a:.1f}", q) == "-1.0"


def test_fill_computes_ratios_with_the_usual_precedence():
    q = {"a": 84.66, "b": 82.83, "n": 3, "fast": 198.0, "slow": 41.0}
    assert Q.fill("{fast / slow:.1f}x", q) == "4.8x"
    assert Q.fill("{a - b / n:.2f} / {(a - b) / n:.2f} / {-(a - b):.1f}", q) == "57.05 / 0.61 / -1.8"
    assert Q.fill("{n * 2} / {n * 2 / 4}", q) == "6 / 1.5"  # an int stays an int until divided
    assert Q.fill("{n * 2:,}", {"n": 2953}) == "5,906"


@pytest.mark.parametrize("template, message", [
    ("{__import__}", "no quantity `__import__`"),  # a name, looked up; never evaluated
    ("{__import__('os')}", "cannot parse `__import__('os')`"),  # refused before anything is looked up
    ("{a ** b}", "cannot parse"),
    ("{(a - b}", "a parenthesis is not closed"),
    ("{a / (b - b)}", "division by zero"),
    ("{t + a}", "t is text"),
    ("{a -}", "ends with an operator"),
    ("{mnv2.dva.r2}", "no quantity `mnv2.dva.r2`"),
    ("{open(a, b)}", "no function `open`"),
    ("{assert a < b}is smaller", "assumption `a < b` is false"),
])
def test_fill_refuses_what_is_not_a_named_quantity_or_a_true_assumption(template, message):
    with pytest.raises(Q.TemplateError, match=re.escape(message)) as e:
        Q.fill("line one\n" + template, {"a": 2.0, "b": 1.0, "mnv2.dva.r1": 80.0, "t": "text"}, "x_notes.md")
    assert "x_notes.md, line 2" in str(e.value)


def test_an_unknown_name_suggests_the_close_ones():
    with pytest.raises(Q.TemplateError, match="did you mean mnv2.dva.r1"):
        Q.fill("{mnv2.dva.r11}", {"mnv2.dva.r1": 1.0})


def test_seeds_vs_names_the_seeds_on_each_side():
    q = {"a.s0": 1.0, "a.s1": 3.0, "a.s2": 2.0, "b.s0": 2.0, "b.s1": 2.0, "b.s2": 2.0, "c.s0": 5.0}
    assert Q.seeds_vs("a", "b", q) == "in seed 1; below it in seed 0; level with it in seed 2"
    assert Q.seeds_vs("b", "a", {**q, "a.s2": 1.0}) == "in seeds 0 and 2; below it in seed 1"
    assert Q.seeds_vs("c", "a", {"c.s0": 5.0, "a.s0": 1.0}) == "in every seed"
    # One seed on the other side (a deterministic or single-seed row): every seed is compared with it.
    assert Q.seeds_vs("a", "c", q) == "in no seed (below it in seeds 0, 1 and 2)"


def test_compare_reports_numbers_and_text_and_ignores_command_lines():
    doc = "| row | R@1 |\n|---|---|\n| DVA | 82.9 |\nMade by `python -m x 2026`\nDVA is above."
    json_text = "| row | R@1 |\n|---|---|\n| DVA | 82.8 |\nMade by `python -m y 2027`\nDVA is below."
    problems = Q.compare(doc, json_text, "doc", skip=S._is_command)
    assert len(problems) == 2
    assert "table row `DVA`" in problems[0] and "column `R@1`" in problems[0] and "says 82.9" in problems[0]
    assert "text differs" in problems[1]
    assert Q.compare(doc, doc, "doc") == []


def test_the_hits_of_a_recall_must_be_whole_queries():
    with pytest.raises(ValueError, match="not a whole number"):
        Q._hits(0.5001, 370, "x")
    assert Q._hits(125 / 370, 370, "x") == 125


def test_regions_are_replaced_between_their_markers_and_missing_ones_named(tmp_path):
    t = next(t for t in S.targets() if t.name == "frozen-backbones")
    text = "a <!-- rendered: frozen-backbones -->old 1.0<!-- /rendered: frozen-backbones --> b"
    new = S.put(text, t, "new 2.0")
    assert new == "a <!-- rendered: frozen-backbones -->new 2.0<!-- /rendered: frozen-backbones --> b"
    assert S.get(S.put(text, t, "x\ny"), t) == "x\ny"  # inline markers stay inline
    block = text.replace("-->old 1.0", "-->\nold 1.0\n")
    assert S.get(S.put(block, t, "x\ny"), t) == "\nx\ny\n"  # markers on their own lines stay there
    with pytest.raises(ValueError, match="no region `frozen-backbones`"):
        S.get("no markers", t)


def _result(path, date, commit, runs):
    d = {"date": date, "git_commit": commit, "rows": [{"name": "dva", "runs": runs}]}
    path.write_text(json.dumps(d, indent=1) + "\n")
    return path


def test_annotate_commits_gives_a_copied_run_the_commit_it_was_made_at(tmp_path):
    run0 = {"name": "dva", "seed": 0, "wall_seconds": 12.5, "metrics": {"recall@1": 0.8}}
    run1 = {**run0, "seed": 1, "wall_seconds": 13.5}
    first = _result(tmp_path / "a.json", "2026-12-01T00:00:00", "aaaaaaa111", [run0])
    pooled = _result(tmp_path / "b.json", "2026-12-02T00:00:00", "bbbbbbb222", [run0, run1])
    assert S.annotate_commits([pooled], pool=[first, pooled]) == {str(pooled): 2}
    runs = json.loads(pooled.read_text())["rows"][0]["runs"]
    assert [r["commit"] for r in runs] == ["aaaaaaa111", "bbbbbbb222"]
    assert S.annotate_commits([pooled], pool=[first, pooled]) == {}  # idempotent


def test_pooled_rows_say_when_their_runs_come_from_different_commits():
    inp = S.default_inputs()
    runs = [run for r in inp.results + inp.pets for row in Q.rows_of(r).values() for run in row["runs"]]
    assert runs and all(run.get("commit") for run in runs)
    note = S.commits_note(inp.results, inp.pets)
    assert "MobileNetV2, 224 px: ICA, ICA + OPA and DVA - seed 0 at `0d61e57`, seeds 1 and 2 at `328272f`" in note


def test_the_claims_table_decides_its_verdicts_from_the_numbers():
    q = S.default_inputs().quantities()
    assert "yes: 32.6 ± 1.1 vs 30.7 ± 2.7 (every seed; 3 seeds each)" in q["tables.claims"]
    worse = {**q, "vit.dva.ood_r1": 30.0, "vit.dva.ood_r1.s0": 30.0}
    cells = S._claim_cells(worse, "vit")
    assert cells[2].startswith("no: 30.0 ± 1.1 vs 30.7 ± 2.7")


def test_demo_results_record_keeps_metrics_and_provenance_without_machine_paths(tmp_path):
    from types import SimpleNamespace as NS

    from dva_train.demo import results_record

    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"kind": "setup", "train_images": 2349, "eval_images": 600},
        {"kind": "eval", "split": "val", "frozen": True, "epoch": 0, "step": 0, "recall@1": 0.7, "map@r": 0.2},
        {"kind": "eval", "split": "val", "epoch": 1, "step": 92, "recall@1": 0.8, "map@r": 0.3},
        {"kind": "eval", "split": "test", "step": 92, "recall@1": 0.6, "map@r": 0.25},
        {"kind": "train", "step": 93, "loss": 1.0}]) + "\n")
    cfg = NS(data=NS(dataset="cub100", protocol="open", root=str(tmp_path), val_classes=-1),
             backbone=NS(name="mobilenetv2_100", img_size=224), ica=NS(rank=4, target="pw+pwl", blocks="-2:"),
             opa=NS(box_source="self"), loss=NS(beta=1.0), train=NS(epochs=2))
    result = {"table": {"frozen backbone": {"recall@1": 0.7}, "DVA": {"recall@1": 0.8}},
              "params": {"adapter_params": 4}, "prep_seconds": 1.0, "train_seconds": 2.0, "wall_seconds": 4.0,
              "checkpoint": str(tmp_path / "x")}
    summary = {"eval_split": "test", "steps": 184, "boxes": 7}
    info = {"git_commit": "abc", "git_dirty": False, "loadavg_start": 0.5, "loadavg_end": [1.5, 1.0, 0.8],
            "cpu_seconds": 3.0}
    rec = results_record(result, summary, cfg, tmp_path, info, "dva demo")
    assert rec["train_images"] == 2349 and rec["eval_images"] == 600  # the test score is not a periodic eval
    assert rec["evals"] == [{"split": "val", "epoch": 1, "step": 92, "recall@1": 0.8, "recall@2": None, "recall@4": None,
                             "recall@8": None, "map@r": 0.3}]
    assert rec["steps"] == 184 and rec["boxes"] == 7 and rec["machine"]["loadavg_1m"] == [0.5, 1.5]
    assert rec["git_commit"] == "abc" and rec["machine"]["loadavg_end_1_5_15"] == [1.5, 1.0, 0.8]
    assert str(tmp_path) not in json.dumps(rec)  # the data root and the checkpoint path stay out
    from dva_train.demo import demo_command

    assert demo_command("runs/d", str(tmp_path), ["--train.epochs", "1"], False, False, "r.json") == \
        "python -m dva_cli demo --out runs/d --data <path> --no-progress --train.epochs 1 --results r.json"


# ----------------------------------------------------------------------------- profile sections, METHOD, README
LITE2_FIRST = "## cub100 with EfficientNet-Lite2: DVA vs baselines"


@pytest.mark.parametrize("doc, old, new, says", [
    # a derived count in a per-profile section's notes (was typed "7 of 2,953 queries short")
    ("DOC", "(+2.8: 6 of 2,953 queries short on the mean)", "(+2.8: 7 of 2,953 queries short on the mean)",
     f"[{LITE2_FIRST}]: line (number 2): the doc says 7, the JSON gives 6"),
    ("DOC", "| DVA rank=8 | 66,304 (2.98%) | 83.1 |", "| DVA rank=8 | 66,304 (2.98%) | 83.2 |",
     "table row `DVA rank=8` column `R@1`: the doc says 83.2, the JSON gives 83.1"),
    ("DOC", "(295-301 of 370 queries right against 286)", "(295-301 of 370 queries right against 285)",
     "the doc says 285, the JSON gives 286"),
    ("DOC", "took\n206 s against 99 s (2.1x)", "took\n206 s against 99 s (2.0x)",
     "the doc says 2.0, the JSON gives 2.1"),
    ("METHOD", "R@1 0.925, MAP@R 0.537", "R@1 0.926, MAP@R 0.537", "docs/METHOD.md [val-frozen]: line (number 2): "
     "the doc says 0.926, the JSON gives 0.925"),
    ("METHOD", "DVF's 0.5 threshold drops 36", "DVF's 0.5 threshold drops 35", "the doc says 35, the JSON gives 36"),
    ("README", "`--full` 82 min", "`--full` 80 min", "README.md [bench-times]: line (number 3): the doc says 80"),
])
def test_an_edited_number_in_a_rendered_section_or_region_fails(docs, doc, old, new, says):
    path = {"DOC": C.DOC, "METHOD": S.METHOD, "README": S.README}[doc]
    problems = S.check(texts={**docs, path: _edit(docs[path], old, new)})
    assert len(problems) == 1 and says in problems[0], problems


def test_every_per_profile_section_is_checked_whole():
    names = {t.name for t in S.targets() if t.doc == C.DOC and t.checked is None}
    assert {sec.title for sec in S.PROFILE_SECTIONS} <= names
    assert len(S.PROFILE_SECTIONS) == len({sec.prefix for sec in S.PROFILE_SECTIONS}) == 9


# Decimal figures a notes template may type: targets (+3.0 R@1, 1.0 below frozen), the export's cosine bar, the
# beta values of the ablation and the rounding rule's 0.1. Any other decimal is a measurement: a placeholder.
TYPED_OK = {"+3.0", "1.0", "0.99999", "0.1", "0.5"}


def test_every_notes_template_is_rendered_and_types_no_measured_figure():
    rendered = {sec.notes for sec in S.PROFILE_SECTIONS} | {"cub100_summary_notes.md", "cub100_readme_notes.md",
                                                            "demo_notes.md", "cub100_beta_notes.md"}
    notes = sorted(C.RESULTS.glob("*_notes.md"))
    assert {p.name for p in notes} == rendered
    for p in notes:
        prose = Q._PLACEHOLDER.sub("", p.read_text())
        typed = set(re.findall(r"[-+]?\d+\.\d+", prose)) - TYPED_OK
        assert not typed, f"{p.name} types {sorted(typed)}: use a placeholder (benchmarks/cub100/quantities.py)"


def test_every_row_of_a_result_is_named_with_its_own_queries():
    q = S.published_quantities()
    assert q["lite2_val.va_ica_lr3e_3.map"] == pytest.approx(68.72, abs=0.01)  # "-" written "_"
    assert q["full.val_frozen.queries"] == 600 and q["full.val_frozen.hits"] == "555"  # 92.5% of 600
    assert q["full.dva_beta0.5.r1"] == pytest.approx(82.5, abs=0.05) and q["full.dva.queries"] == 2953
    assert q["pets.mnv2.dva.queries"] == 190 and q["mnv2.dva.ood_queries"] == 370
    assert q["full.full.r1.min"] > q["full.dva.r1.max"]
    # aliases (dva_beta1 = dva's seed 0) are one run: the summed wall time counts it once
    assert q["full.rows_min"] < q["file.cub100_full.min"] + q["val224.rows_min"]


def test_render_fills_notes_from_the_files_it_renders(tmp_path):
    from benchmarks.cub100 import render as R

    res = json.loads((C.RESULTS / "cub100_lite2_3st_quick.json").read_text())
    next(r for r in res["rows"] if r["name"] == "dva")["stats"]["recall@1"] = [90.04, 0.0]  # a re-run's numbers
    doc = tmp_path / "B.md"
    title = "## cub100 with EfficientNet-Lite2, validated adapters (last three stages)"
    R.render([res], doc, None, "DVA {lite2.dva.r1:.1f} vs {lite2.frozen.r1:.1f}; MobileNetV2 {mnv2.dva.r1:.1f}", title)
    assert "DVA 90.0 vs 83.1; MobileNetV2 82.8" in doc.read_text()  # its own rows from the files given
    R.render([res], doc, None, "{this.dva.r1 - this.frozen.r1:+.1f}", "## a section summary.py does not list")
    assert "+6.9" in doc.read_text()
    with pytest.raises(Q.TemplateError, match="notes.md, line 1: no quantity `lite2.dva.r11`"):
        R.render([res], doc, None, "{lite2.dva.r11}", title, "notes.md")
    R.render([res], doc, None, "no placeholder: {", title)  # plain notes are pasted as they are
    assert "no placeholder: {" in doc.read_text()


def test_a_pooled_row_states_the_commits_of_its_runs():
    from benchmarks.cub100 import render as R

    res = json.loads((C.RESULTS / "cub100_vit_s14_8blk_seeds.json").read_text())
    assert "ICA and DVA (ICA + OPA + DPT) - seed 0 at `480965a`, seeds 1 and 2 at `328272f`." in R.markdown(res)
    for run in (run for row in res["rows"] for run in row["runs"]):
        run["commit"] = "abcdef0123"
    assert "Every row's runs were made at one commit." in R.markdown(res)
    del res["rows"][0]["runs"][1]["commit"]
    assert "No commit recorded for the runs of: ICA." in R.markdown(res)


def test_run_one_records_the_commit_of_each_run(tmp_path, monkeypatch):
    from benchmarks.cub100 import run as runner

    # The worker, faked: a Python process that writes the result file run_one reads back.
    fake = ("import json, pathlib, sys; s = json.loads(pathlib.Path(sys.argv[1]).read_text()); "
            "pathlib.Path(s['out'], 'result.json').write_text(json.dumps({'name': s['name'], 'metrics': {}}))")
    monkeypatch.setattr(runner.C, "child_command", lambda script, *args: [sys.executable, "-c", fake, args[-1]])
    res = runner.run_one("ica", "train", [], tmp_path / "ica", tmp_path / "cache", 1, 0, log=lambda *a, **k: None)
    assert res["commit"] == C.git_commit() and len(res["commit"]) == 40 and isinstance(res["git_dirty"], bool)
    assert json.loads((tmp_path / "ica" / "result.json").read_text())["commit"] == res["commit"]


@pytest.mark.parametrize("typed, model, ica", [
    ("{n:,} parameters = {pct:.3f}% (the paper: 0.68%)", "vit_base_patch16_224",
     {"rank": 16, "target": "qk", "blocks": "all"}),
    ("(MobileNetV2 rank 4: {n:,} parameters = {pct:.2f}%)", "mobilenetv2_100",
     {"rank": 4, "target": "pw+pwl+head", "blocks": "-2:"}),
    ("(rank 4: {n:,} = {pct:.2f}%)", "mobilenetv2_100", {"rank": 4, "target": "pw+pwl", "blocks": "-2:"}),
])
def test_parameter_counts_typed_in_method_are_the_computed_ones(docs, typed, model, ica):
    from dva import DVAConfig, build_model, count_parameters

    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights = model, "none"
    for k, v in ica.items():
        setattr(cfg.ica, k, v)
    c = count_parameters(build_model(cfg))
    text = typed.format(n=c["adapter_params"], pct=100 * c["trainable_fraction"])
    assert text in " ".join(docs[S.METHOD].split()), f"docs/METHOD.md should say `{text}` (the count of {model})"


def test_lite2_weight_count_typed_in_method_is_timm_s():
    import timm

    n = sum(p.numel() for p in timm.create_model("tf_efficientnet_lite2", pretrained=False).parameters())
    assert f"Lite2: {n / 1e6:.2f} M\n    weights" in S.METHOD.read_text()
