"""benchmarks/datasets/docs.py: the "Six datasets" section and the README table, rendered and checked."""
from __future__ import annotations

import json

import pytest

from benchmarks import _common as C
from benchmarks.datasets import docs as D


def _row(name: str, r1: float, ood: dict[str, float], seeds: int = 1) -> dict:
    return {"name": name, "label": name.upper(), "seeds": list(range(seeds)), "seeds_label": f"{seeds} seed",
            "overrides": [], "steps": 184, "trainable_pct": 1.5, "trainable_params": 1000,
            "stats": {"recall@1": [r1, 0.5], "map@r": [r1 / 4, 0.1],
                      "ood": {g: {"recall@1": [v, 0.0], "map@r": [v / 4, 0.0]} for g, v in ood.items()}}}


def _main(ds: str, frozen: float, dva: float, full: float, ood: tuple[float, float, float]) -> dict:
    gals = [g for g in ("cub100", "cars196", "aircraft47") if g != ds] + ["pets37"]
    f, d, u = ood
    return {"settings": {"dataset": ds, "backbone": "mobilenetv2", "profile": "main", "img_size": 224, "ood": gals},
            "rows": [_row("frozen", frozen, {g: f for g in gals}), _row("full", full, {g: u for g in gals}, 3),
                     _row("dva", dva, {g: d for g in gals}, 3)]}


def _select(ds: str) -> dict:
    cands = [{"name": "st184", "overrides": [], "chosen": False, "val_metrics": {"recall@1": 0.5, "map@r": 0.1}},
             {"name": "st368", "overrides": [], "chosen": True, "val_metrics": {"recall@1": 0.6, "map@r": 0.2}}]
    return {"settings": {"dataset": ds, "backbone": "mobilenetv2", "profile": "select", "val_classes": 5},
            "stages": [{"name": "steps", "chosen": "st368", "candidates": cands}], "complete": False,
            "frozen_val_metrics": {"recall@1": 0.4, "map@r": 0.08}}


@pytest.fixture
def folder(tmp_path):
    # cars196: +12 R@1 (target 1 passes there), gap 12/15 = 80% (passes), OOD DVA 50 > full 45, >= frozen-1.
    # aircraft47: +6 R@1 (fails target 1), gap 6/12 = 50%, OOD DVA 48.5 vs frozen 50: within 1.0? no (-1.5).
    results = {"cars196_mobilenetv2_main.json": _main("cars196", 40.0, 52.0, 55.0, (50.0, 50.0, 45.0)),
               "aircraft47_mobilenetv2_main.json": _main("aircraft47", 40.0, 46.0, 52.0, (50.0, 48.5, 44.0)),
               "aircraft47_mobilenetv2_select.json": _select("aircraft47")}
    for name, res in results.items():
        (tmp_path / name).write_text(json.dumps(res))
    return tmp_path


def test_targets_are_computed_from_the_results(folder):
    selects, mains = D.load_results(folder)
    assert [m["settings"]["dataset"] for m in mains] == ["cars196", "aircraft47"]  # harness order
    t = D.targets(mains)
    assert "**does not hold**" in t[0] and "cars196 +12.0 (the full fine-tune +15.0)" in t[0]
    assert "aircraft47 +6.0 (the full fine-tune +12.0)" in t[0]  # the reference beside the target's figure
    assert "**does not hold**" in t[1] and "cub100: not measured yet" in t[1]
    # DVA's seed SD (0.5 R@1) in points of the 15-point gap: 3.
    assert "cars196 best 80% (mobilenetv2; DVA's seed SD is 3 points of the gap)" in t[1]
    assert "**does not hold**" in t[2] and "aircraft47: DVA 48.5, full 44.0, frozen 50.0" in t[2]
    # Only the passing dataset measured: target 1 "holds so far", never "holds".
    only_cars = [m for m in mains if m["settings"]["dataset"] == "cars196"]
    assert "**holds so far**" in D.targets(only_cars)[0]
    assert D.targets([])[0].split(": ")[1].startswith("not measured yet")
    # A Lite0 main profile (frozen and DVA only, for its preset) is no (backbone, dataset) pair of the targets.
    lite0 = json.loads(json.dumps(mains[0]))
    lite0["settings"]["backbone"] = "lite0"
    lite0["rows"] = [r for r in lite0["rows"] if r["name"] != "full"]
    assert D.targets(mains + [lite0]) == t
    assert "lite0" not in D.STUDY_BACKBONES and "mobilenetv2" in D.STUDY_BACKBONES


def test_findings_say_behind_or_ahead_from_the_numbers(folder):
    _, mains = D.load_results(folder)
    f = D.findings(mains)
    assert f[0].startswith("cars196, mobilenetv2: DVA R@1 52.0 against frozen 40.0 (+12.0), 3.0 behind the full")
    assert "80% of the gap closed" in f[0] and "mean OOD R@1 50.0 (0.0 from frozen; the full fine-tune -5.0)" in f[0]
    mains[0]["rows"][2]["stats"]["recall@1"][0] = 56.0
    assert "1.0 ahead of the full fine-tune" in D.findings(mains)[0]


def test_section_renders_and_the_check_catches_an_edited_number(folder):
    selects, mains = D.load_results(folder)
    body = D.section(selects, mains, "datasets_ood.png")
    assert "| aircraft47 | mobilenetv2 | 5 | (not run) | (not run) | st368 | (not run) | 40.0 -> 60.0 | 8.0 -> 20.0 | no |" \
        in body
    assert "| cars196 | mobilenetv2 | to run | done |" in body
    doc = C.put_region("# Benchmarks\n", D.DOC_REGION, body, D.HEADING)
    readme = C.put_region(f"x\n<!-- rendered: {D.README_REGION} -->\n<!-- /rendered: {D.README_REGION} -->\n",
                   D.README_REGION, D.readme_table(mains))
    assert D.check(folder, doc, readme) == []
    edited = doc.replace("(+12.0)", "(+13.0)")
    assert edited != doc and any("13.0" in p for p in D.check(folder, edited, readme))
    assert D.check(folder, doc, readme.replace("52.0", "51.0"))
    assert "- cars196, mobilenetv2: DVA R@1 52.0 against frozen 40.0 (+12.0), 3.0 behind" in readme  # the words too
    assert D.check(folder, doc, readme.replace("3.0 behind", "3.0 ahead of"))


def test_a_choice_made_by_the_dear_margin_is_said(folder):
    sel = _select("cub100")
    sel["stages"] = [{"name": "placement", "chosen": "r4_3st", "chosen_by": "margin", "dear_margin": 0.005,
                      "candidates": [
                          {"name": "r4_2st", "dear": False, "chosen": False, "val_metrics": {"map@r": 0.5939}},
                          {"name": "r4_3st", "dear": False, "chosen": True, "val_metrics": {"map@r": 0.6026}},
                          {"name": "r2_all", "dear": True, "chosen": False, "val_metrics": {"map@r": 0.6036}}]}]
    body = D.chosen_table([sel, _select("aircraft47")])
    assert "| cub100 | mobilenetv2 | 5 | r4_3st (margin) | (not run) |" in body
    assert D.margin_lines([sel]) == [
        "(margin) cub100 x mobilenetv2, placement: r2_all (adapters below the cached prefix) led r4_3st by 0.10 "
        "MAP@R points on validation, under the 0.5 that such a candidate needs: r4_3st was kept."]
    assert D.margin_lines([_select("aircraft47")]) == [] and "(margin)" not in D.chosen_table([_select("aircraft47")])


def test_the_docs_match_the_committed_results():
    assert D.check() == []


def test_parts_findings_compare_object_views_on_validation_and_test():
    # ICA alone 50.0 / 12.5 (1 seed); DVA 49.0 / 13.0 (3 seeds, SD 0.5 / 0.2): R@1 and MAP@R disagree on test.
    main = _main("cars196", 40.0, 49.0, 55.0, (50.0, 50.0, 45.0))
    main["rows"].append(_row("ica", 50.0, {}))
    main["rows"][2]["stats"]["map@r"] = [13.0, 0.2]
    cand = lambda n, m, c: {"name": n, "overrides": [], "chosen": c,  # noqa: E731
                            "val_metrics": {"recall@1": 0.5, "map@r": m}}
    sel = {"settings": {"dataset": "cars196", "backbone": "mobilenetv2", "profile": "select"},
           "chosen_tokens": {"opa": ["--loss.beta", "1"]},
           "stages": [{"name": "steps", "scope": "trained", "chosen": "st736",
                       "candidates": [cand("st184", 0.10, False), cand("st736", 0.1746, True)]},
                      {"name": "beta", "scope": "opa", "chosen": "beta1",
                       "candidates": [cand("beta0", 0.18, False), cand("beta1", 0.1854, True)]}]}
    (line,) = D.parts_findings([main], [sel])
    assert line.startswith("cars196, mobilenetv2, the parts (test R@1 / MAP@R): ICA alone 50.0 / 12.5 (1 seed); "
                           "DVA 49.0 ± 0.5 / 13.0 ± 0.2 (3 seeds): DVA is -1.0 R@1 and +0.5 MAP@R from ICA alone.")
    # Differences of the unrounded figures, rounded once: 18.54 - 17.46 = +1.08, printed +1.1.
    assert "DPT weight (beta1) scored 18.5 against ICA alone's 17.5 (+1.1): the same order on test MAP@R" in line
    assert line.endswith("; test R@1 and MAP@R rank the two differently.")
    # The DPT weight 0 chosen: said to be ICA + OPA.
    zero = {**sel, "chosen_tokens": {"opa": ["--loss.beta", "0"]}}
    assert "(beta1; 0: no distillation, so DVA here is ICA + OPA)" in D.parts_findings([main], [zero])[0]
    # Validation's order reversed on test MAP@R; a test difference within DVA's seed SD is no order (and not a
    # disagreement with R@1); a printed tie on validation is a tie.
    main["rows"][2]["stats"]["map@r"] = [12.0, 0.2]
    assert "(+1.1): the other order on test MAP@R." in D.parts_findings([main], [sel])[0]
    main["rows"][2]["stats"]["map@r"] = [12.65, 0.2]  # +0.15 against an SD of 0.2
    got = D.parts_findings([main], [sel])[0]
    assert "+0.2 MAP@R from ICA alone (MAP@R within DVA's seed SD)." in got
    assert got.endswith("(+1.1): test MAP@R cannot tell them apart.")
    main["rows"][2]["stats"]["recall@1"] = [49.8, 0.5]  # -0.2 against an SD of 0.5
    assert "(R@1 and MAP@R within DVA's seed SD)" in D.parts_findings([main], [sel])[0]
    sel["stages"][1]["candidates"][1]["val_metrics"]["map@r"] = 0.1748  # +0.02: printed 0.0
    assert "(0.0): validation could not tell them apart." in D.parts_findings([main], [sel])[0]
    # The OOD means (the _main fixture: DVA 50.0 on every gallery; ICA alone scored on none here, then on all).
    assert "Out of distribution" not in D.parts_findings([main], [sel])[0]
    main["rows"][3]["stats"]["ood"] = {g: {"recall@1": [51.26, 0.0], "map@r": [1.0, 0.0]}
                                       for g in main["settings"]["ood"]}
    assert D.parts_findings([main], [sel])[0].endswith(
        ". Out of distribution (mean OOD R@1) DVA 50.0 against ICA alone's 51.3 (-1.3).")
    # Without a select result, the test half only.
    main["rows"][2]["stats"]["map@r"] = [12.0, 0.2]
    assert "-0.5 MAP@R from ICA alone (R@1 within DVA's seed SD). Out of" in D.parts_findings([main], [])[0]
    assert D.parts_findings([_main("cars196", 40.0, 49.0, 55.0, (50.0, 50.0, 45.0))], [sel]) == []  # no ICA row


def test_a_lead_within_the_seed_sd_is_said_to_be(folder):
    _, mains = D.load_results(folder)
    mains[0]["rows"][2]["stats"]["recall@1"] = [54.7, 0.5]  # 0.3 behind the full fine-tune, SDs 0.5
    assert "0.3 behind the full fine-tune (55.0; within the seed SD, 0.5)" in D.findings(mains)[0]
