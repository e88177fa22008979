"""The datasets harness (``python -m benchmarks.datasets.run``): plan, validation choice, resume and
reuse, OOD matrix, rendering. Generated data only; the one real run is two optimiser steps on 64 px
images, with the test classes' files poisoned. The real-data checks skip when the data are absent."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import _common as C
from benchmarks.datasets import ood as O
from benchmarks.datasets import plan as P
from benchmarks.datasets import render as R
from benchmarks.datasets import run as runner
from benchmarks.datasets import select as S

DATASETS = ("cub100", "cars196", "aircraft47")
BACKBONES = ("mobilenetv2", "lite2", "vit_s14", "lite0", "lite1")


def _value(tokens: list[str], key: str) -> str | None:
    vals = [tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == key]
    return vals[-1] if vals else None


# ----------------------------------------------------------------------------- plan
def test_the_tokens_every_run_starts_from_are_pinned():
    """backbone_overrides enters every run's tokens and so its folder's digest: a change (e.g. reordering
    the placement candidates) would rename, and so re-run, every recorded run of the backbone."""
    assert P.backbone_overrides(P.TABLE, "mobilenetv2") == ["--ica.rank", "4", "--ica.target", "pw+pwl",
                                                             "--ica.blocks", "'-2:'"]
    assert P.backbone_overrides(P.TABLE, "lite2") == ["--ica.rank", "4", "--ica.target", "pw+pwl", "--ica.blocks", "'-3:'"]
    assert P.backbone_overrides(P.TABLE, "vit_s14") == ["--ica.rank", "8", "--ica.target", "qk", "--ica.blocks", "'-8:'"]
    st = P.TABLE.stages[0]
    bare = P.TABLE._replace(stages=[st._replace(candidates={"lite2": st.candidates["lite2"]}), *P.TABLE.stages[1:]])
    with pytest.raises(ValueError, match="no candidates for 'mobilenetv2'"):
        P.backbone_overrides(bare, "mobilenetv2")


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_plan_over_datasets_and_backbones(dataset, backbone, tmp_path):
    t, ds = P.TABLE, P.TABLE.datasets[dataset]
    bb = t.backbones[backbone]
    val = P.common_overrides(ds, "ROOT", tmp_path, 2, bb, ds.val_classes)
    for k, st in enumerate(t.stages):
        runs = P.select_stage_runs(t, backbone, val, k, {})
        assert [r.name for r in runs] == [f"{st.name}:{c}" for c in st.of(backbone)]
        for r in runs:  # every candidate on the held-out training classes, of this dataset, this backbone
            assert _value(r.overrides, "--data.val_classes") == str(ds.val_classes) and ds.val_classes > 0
            assert _value(r.overrides, "--data.dataset") == ds.reader
            assert _value(r.overrides, "--backbone.name") == bb.model
            assert (_value(r.overrides, "--opa.enabled") == "false") == (st.scope != "opa")
            assert ("--loss.beta" in r.overrides) == (st.scope == "opa")
    # The placement grid holds "more stages"/"all stages" and a larger rank than the cub100 choice,
    # its first candidate, which every run of the backbone starts from.
    place = t.stages[0].of(backbone)
    assert P.backbone_overrides(t, backbone) == next(iter(place.values()))
    preset_rank = int(P.backbone_overrides(t, backbone)[1])
    assert any(_value(o, "--ica.blocks") == "all" for o in place.values())
    assert any(int(_value(o, "--ica.rank")) > preset_rank for o in place.values())
    assert any(int(_value(o, "--train.steps")) > 184 for o in t.stages[2].of(backbone).values())

    if bb.main_rows != tuple(t.main_rows):  # Lite0/Lite1: two rows (test_backbone_main_rows_are_checked)
        return
    chosen = {"adapters": ["--ica.rank", "8", "--train.lr", "3e-3"], "trained": ["--train.steps", "368"],
              "opa": ["--loss.beta", "2"]}
    main = P.main_runs(t, ds, backbone, P.common_overrides(ds, "ROOT", tmp_path, 2, bb, 0), chosen, [0, 1, 2])
    by = {name: (label, sl, runs) for name, label, sl, runs in main}
    assert list(by) == ["ica", "dva", "ica_opa", "dva_det", "head", "full", "frozen"]
    for name, (_, _, runs) in by.items():
        ov = runs[0].overrides
        assert _value(ov, "--data.val_classes") == "0"
        assert _value(ov, "--train.steps") == ("368" if name != "frozen" else "184")
        assert (_value(ov, "--ica.rank") == "8") == (name in ("ica", "dva", "ica_opa", "dva_det"))
    assert _value(by["dva"][2][0].overrides, "--loss.beta") == "2"
    assert _value(by["ica_opa"][2][0].overrides, "--loss.beta") == "0"
    assert _value(by["dva_det"][2][0].overrides, "--opa.box_source") == "yolox"
    assert _value(by["dva_det"][2][0].overrides, "--opa.prompt") == ds.coco_class
    assert _value(by["full"][2][0].overrides, "--train.lr") == "1e-4"  # the @chosen lr is the adapters'
    assert [len(by[n][2]) for n in ("frozen", "dva", "full", "ica")] == [1, 3, 3, 1]
    assert by["dva"][1] == "3 seeds" and by["ica"][1] == "1 seed" and "deterministic" in by["frozen"][1]
    assert len({r.tag for *_, runs in main for r in runs}) == 11  # one folder per run


def test_dataset_table_and_seeds():
    t = P.TABLE
    assert {n: d.coco_class for n, d in t.datasets.items()} == {"cub100": "bird", "cars196": "car",
                                                               "aircraft47": "airplane"}
    assert runner.seeds_of(t, "mobilenetv2", None, False) == [0, 1, 2]
    assert runner.seeds_of(t, "lite2", None, False) == [0] and runner.seeds_of(t, "mobilenetv2", None, True) == [0]
    assert runner.seeds_of(t, "vit_s14", 2, False) == [0, 1]


def test_folder_digest_ignores_places_and_threads():
    a = ["--data.root", "/a", "--train.threads", "2", "--ica.rank", "4", "--train.eval_frozen", "false"]
    b = ["--data.root", "/b", "--train.threads", "1", "--ica.rank", "4"]
    assert P.digest(a) == P.digest(b) and P.digest(a) != P.digest(b[:-1] + ["8"])


def test_plan_printout_estimates_every_run(capsys, tmp_path):
    # --out: a profile JSON of nothing finished (the committed one's runs would be [done]: reused)
    assert runner.main(["--dataset", "cars196", "--backbone", "mobilenetv2", "--profile", "select", "--plan",
                        "--root", "/nonexistent", "--out", str(tmp_path / "none.json")]) == 0
    out = capsys.readouterr().out
    assert "placement:r4_2st" in out and "beta:beta2" in out
    assert "estimated total ~" in out and "worst case" in out and "min" in out
    # The lr stage's first candidate is the placement stage's first run: one folder, no second cost.
    lines = [ln for ln in out.splitlines() if ln.strip().startswith(("placement:r4_2st", "lr:lr1e-3"))]
    assert lines[0].split()[1] == lines[1].split()[1] and lines[1].endswith("~0 min")


def test_plan_lines_leave_finished_runs_out_of_the_total():
    from benchmarks.datasets import costs as K

    rows = [("a", "a_s0_1", 600.0), ("b", "b_s0_2", 1200.0), ("c", "c_s0_3", None)]
    assert K.plan_lines(rows)[-1] == ("  estimated total ~30 min (within the 2 h of a profile; 1 run(s) without a "
                                      "measured cost)")
    lines = K.plan_lines(rows, done={"b_s0_2", "c_s0_3"})
    assert lines[1].endswith("[done]") and lines[0].endswith("~10 min")
    assert lines[-1] == "  estimated total ~10 min (within the 2 h of a profile; 2 run(s) done, not counted)"
    # nothing measured: no total (not "~0 min", which would read as nothing to do)
    assert K.plan_lines([("c", "c_s0_3", None), ("d", "d_s0_4", None)])[-1] == (
        "  estimated total: unknown (2 run(s) without a measured cost: no run of this kind measured yet)")


def test_main_plan_marks_finished_runs_and_a_row_of_another_rows_settings(tmp_path, capsys):
    # Validation chose the DPT weight 0: ICA + OPA is DVA's seed-0 run (no cost); a finished run is [done].
    sel = {"settings": {"dataset": "cars196", "backbone": "mobilenetv2", "profile": "select"}, "complete": True,
           "chosen_tokens": {"adapters": ["--ica.rank", "8"], "trained": ["--train.steps", "736"],
                             "opa": ["--loss.beta", "0"]}}
    (tmp_path / "sel.json").write_text(json.dumps(sel))
    argv = ["--dataset", "cars196", "--profile", "main", "--plan", "--root", "/nonexistent",
            "--select", str(tmp_path / "sel.json"), "--work-dir", str(tmp_path / "work"),
            "--out", str(tmp_path / "main.json")]
    assert runner.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    dva0 = next(t for ln in lines for t in ln.split() if t.startswith("dva_s0_"))
    same = next(ln for ln in lines if ln.strip().startswith("ica_opa"))
    assert f"= {dva0}" in same and same.endswith("~0 min")
    (tmp_path / "work" / dva0).mkdir(parents=True)
    (tmp_path / "work" / dva0 / "result.json").write_text("{}")  # the worker's, not yet measured: not finished
    assert runner.main(argv) == 0
    assert "done" not in capsys.readouterr().out
    (tmp_path / "work" / dva0 / "result.json").write_text('{"wall_seconds": 1.0}')
    assert runner.main(argv) == 0
    out = capsys.readouterr().out
    assert next(ln for ln in out.splitlines() if dva0 in ln and ln.strip().startswith("dva")).endswith("[done]")
    assert "1 run(s) done, not counted" in out  # DVA's seed 0 (ICA + OPA is that run: ~0 min, not a second)


def test_costs_from_result_files(tmp_path):
    from benchmarks.datasets import costs as K

    res = {"settings": {"model": "m", "img_size": 64}, "rows": [
        {"name": "ica", "runs": [{"steps": 100, "train_seconds": 20.0, "wall_seconds": 50.0, "embed_img_per_s": 10.0}]},
        {"name": "dva", "runs": [{"steps": 100, "train_seconds": 50.0, "wall_seconds": 60.0}]}]}
    (tmp_path / "r.json").write_text(json.dumps(res))
    costs = K.load_costs([tmp_path / "r.json"])
    assert costs[("m", 64, "ica")].s_per_step == pytest.approx(0.2)
    ov = ["--opa.enabled", "false", "--train.steps", "50"]
    # 50 steps x 0.2 s + 30 s overhead x (2 x cub100's images) + 100 OOD images at 10 img/s
    assert K.estimate(costs, "m", 64, ov, False, 2 * K.CUB100_IMAGES, 100) == pytest.approx(10 + 60 + 10)
    assert K.run_kind(["--train.trainable", "full"]) == "full"
    assert K.run_kind(["--ica.blocks", "all", "--train.cache_prefix", "off"]) == "full"
    assert K.run_kind([]) == "dva" and K.estimate(costs, "x", 64, ov, False, 1) is None


# ----------------------------------------------------------------------------- the choice
def test_choose_best_validation_score_ties_and_nan():
    assert S.choose({"a": (0.30, 0.5), "b": (0.32, 0.4), "c": (0.31, 0.9)}) == "b"
    assert S.choose({"a": (0.30, 0.5), "b": (0.30, 0.6)}) == "b"  # tie on MAP@R: R@1
    assert S.choose({"a": (0.30, 0.5), "b": (0.30, 0.5)}) == "a"  # full tie: the earlier one
    assert S.choose({"a": (float("nan"), 0.9), "b": (0.1, 0.1)}) == "b"
    with pytest.raises(ValueError, match="not on the validation split"):
        S.val_score({"name": "x", "eval_split": "test", "metrics": {"map@r": 0.9}}, "map@r")


def test_a_dear_candidate_must_win_by_the_margin():
    scores = {"r4_2st": (0.594, 0.95), "r4_3st": (0.603, 0.95), "r2_all": (0.604, 0.947)}  # cub100's placement
    assert S.choose(scores) == "r2_all"  # the plain rule: best MAP@R
    assert S.choose_with_margin(scores, {"r2_all"}, 0.005) == ("r4_3st", "margin")  # 0.1 point: not enough
    assert S.choose_with_margin(scores, {"r2_all"}, 0.0) == ("r2_all", "best")
    assert S.choose_with_margin({**scores, "r2_all": (0.609, 0.9)}, {"r2_all"}, 0.005) == ("r2_all", "best")
    assert S.choose_with_margin(scores, {"r4_2st"}, 0.005) == ("r2_all", "best")  # the best is cheap
    assert S.choose_with_margin({"r2_all": (0.6, 0.9)}, {"r2_all"}, 0.005) == ("r2_all", "best")  # no cheap one
    assert S.choose_with_margin({"a": (float("nan"), 0.9), "b": (0.2, 0.5)}, {"b"}, 0.005) == ("b", "best")
    # The harness: 0.5 MAP@R points; the every-stage candidates (no cached prefix) are the dear ones.
    assert P.TABLE.dear_margin == 0.005
    dear = {bb: [n for n, t in P.TABLE.stages[0].of(bb).items() if P.is_dear(t)] for bb in P.TABLE.backbones}
    assert dear == {"mobilenetv2": ["r2_all"], "lite2": ["r2_all"], "vit_s14": ["r8_all"], "lite0": ["r2_all"],
                    "lite1": ["r2_all"]}
    assert not any(P.is_dear(t) for st in P.TABLE.stages[1:] for t in st.of("mobilenetv2").values())
    assert P.is_dear(["--x", "1", "--train.cache_prefix", "off"]) and not P.is_dear(["--train.cache_prefix", "on"])


FAKE_WORKER = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    spec = json.loads(Path(sys.argv[1]).read_text())
    ov = spec["overrides"]
    def last(k, d=None):
        v = [ov[i + 1] for i, t in enumerate(ov[:-1]) if t == k]
        return v[-1] if v else d
    with open(os.environ["FAKE_LOG"], "a") as f:
        f.write(Path(spec["out"]).name + "\\n")
    if os.environ.get("FAKE_FAIL") and os.environ["FAKE_FAIL"] in " ".join(ov):
        sys.exit(3)  # a killed run: no result.json
    val = int(last("--data.val_classes", "0"))
    assert bool(spec.get("validation_only")) == (val > 0)
    score = (0.3 + 0.05 * (last("--ica.rank") == "8") + 0.04 * (last("--train.lr") == "3e-3")
             + 0.03 * (last("--train.steps") == "368") + 0.02 * (last("--loss.beta") == "2")
             - 0.1 * (last("--train.trainable") == "none") + 0.01 * int(last("--train.seed", "0")))
    if spec["kind"] == "frozen":
        score = 0.2
    elif last("--train.trainable") == "full":
        score = 0.5
    m = {"recall@1": score + 0.2, "map@r": score}
    res = {"name": spec["name"], "seed": int(last("--train.seed", "0")), "folder": Path(spec["out"]).name,
           "eval_split": "val" if val else "test", "metrics": m, "steps": int(last("--train.steps", "0")),
           "train_seconds": 1.0, "params": {"trainable_params": 10, "trainable_fraction": 0.01},
           "frozen_metrics": {"recall@1": 0.4, "map@r": 0.2}}
    if spec.get("ood"):
        res["ood_metrics"] = {g["name"]: {"recall@1": score - 0.1, "map@r": 0.1} for g in spec["ood"]}
    Path(spec["out"], "result.json").write_text(json.dumps(res))
''')


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Runs go to a fake worker (a score from the overrides, no torch); returns the invocation log reader."""
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    log = tmp_path / "invocations.log"
    log.write_text("")
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setattr(C, "child_command", lambda _f, _w, spec: [sys.executable, str(script), spec])

    def calls() -> list[str]:
        return log.read_text().split()
    return calls


def _ctx(tmp_path, dataset="cars196", backbone="mobilenetv2", reuse=None, work="work"):
    return runner.Context(P.TABLE, dataset, backbone, "ROOT", tmp_path / work, tmp_path / "cache", 1,
                          runner.reuse_index(reuse))


def test_select_chooses_on_validation_and_main_reads_the_choice(tmp_path, fake, capsys):
    out = tmp_path / "sel.json"
    res = runner.run_select(_ctx(tmp_path), out, ["--profile", "select"])
    assert json.loads(out.read_text())["chosen"] == res["chosen"]
    assert res["chosen"] == {"placement": "r8_2st", "lr": "lr3e-3", "steps": "st368", "beta": "beta2"}
    assert res["complete"] and res["frozen_val_metrics"] == {"recall@1": 0.4, "map@r": 0.2}
    placement = res["stages"][0]
    assert placement["dear_margin"] == 0.005 and placement["chosen_by"] == "best"
    assert [c["name"] for c in placement["candidates"] if c["dear"]] == ["r2_all"]
    assert res["chosen_tokens"]["adapters"][-2:] == ["--train.lr", "3e-3"]
    assert res["chosen_tokens"]["trained"] == ["--train.steps", "368"]
    assert res["chosen_tokens"]["opa"] == ["--loss.beta", "2"]
    for st in res["stages"]:  # every candidate recorded with its validation score; one chosen per stage
        assert [c["chosen"] for c in st["candidates"]].count(True) == 1
        assert all(c["run"]["eval_split"] == "val" and c["val_metrics"]["map@r"] > 0 for c in st["candidates"])
    # Runs equal to an earlier stage's winner are not run twice: 4 + 2 + 3 + 3 of 4 + 3 + 4 + 3 candidates.
    assert len(fake()) == 12 == len(set(fake()))
    chosen = P.chosen_tokens(res, "cars196", "mobilenetv2")
    with pytest.raises(ValueError, match="pass --select"):
        P.chosen_tokens(res, "aircraft47", "mobilenetv2")
    with pytest.raises(ValueError, match="did not finish"):
        P.chosen_tokens({**res, "complete": False}, "cars196", "mobilenetv2")
    assert chosen["opa"] == ["--loss.beta", "2"]


def test_select_profile_resumes_after_a_killed_run(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "--train.lr 3e-4")
    with pytest.raises(RuntimeError, match="failed"):
        runner.run_select(_ctx(tmp_path), tmp_path / "sel.json", [])
    first = fake()
    partial = json.loads((tmp_path / "sel.json").read_text())
    assert [s["name"] for s in partial["stages"]] == ["placement"] and not partial["complete"]
    monkeypatch.delenv("FAKE_FAIL")
    res = runner.run_select(_ctx(tmp_path), tmp_path / "sel.json", [])
    again = fake()[len(first):]
    # Finished runs kept: only the killed run and the ones after it run now.
    assert not set(again) & set(first[:-1]) and again[0] == first[-1] and res["complete"]


def test_main_profile_seeds_ood_and_reuse(tmp_path, fake, monkeypatch):
    sel = runner.run_select(_ctx(tmp_path), tmp_path / "sel.json", [])
    n_select = len(fake())
    gals = [O.Gallery("aircraft47", "folder", "A", "test"), O.Gallery("pets37", "folder", "P", "all")]
    monkeypatch.setattr(O, "galleries", lambda *a, **k: (gals, ["cub100"]))
    args = runner.build_parser().parse_args(["--dataset", "cars196", "--select", str(tmp_path / "sel.json")])
    res = runner.run_main(_ctx(tmp_path), args, tmp_path / "main.json", [])
    rows = {r["name"]: r for r in res["rows"]}
    assert list(rows) == ["frozen", "head", "full", "ica", "ica_opa", "dva", "dva_det"]  # the tables' order
    assert len(fake()) - n_select == 11
    assert rows["dva"]["seeds"] == [0, 1, 2] and rows["frozen"]["seeds"] == [0] and rows["ica"]["seeds"] == [0]
    assert rows["dva"]["stats"]["map@r"][0] == pytest.approx(100 * (0.3 + 0.05 + 0.04 + 0.03 + 0.02 + 0.01))
    assert rows["dva"]["stats"]["map@r"][1] == pytest.approx(1.0)  # seeds 0, 1, 2: +0, +1, +2 points
    assert set(rows["dva"]["stats"]["ood"]) == {"aircraft47", "pets37"}
    assert res["settings"]["ood"] == ["aircraft47", "pets37"] and res["settings"]["ood_missing"] == ["cub100"]
    assert res["settings"]["chosen_tokens"] == sel["chosen_tokens"] and len(res["settings"]["rows"]) == 7
    assert "--ica.rank" in rows["dva"]["overrides"] and _value(rows["dva"]["overrides"], "--loss.beta") == "2"
    # --reuse in a fresh work folder: every run of the same settings comes from the file, none runs.
    before = len(fake())
    ctx = _ctx(tmp_path, reuse=[str(tmp_path / "main.json")], work="work2")
    again = runner.run_main(ctx, args, tmp_path / "main2.json", [])
    assert len(fake()) == before
    assert all(r["reused_from"].endswith("main.json") for row in again["rows"] for r in row["runs"])
    assert [r["stats"] for r in again["rows"]] == [r["stats"] for r in res["rows"]]


def test_a_row_of_another_rows_settings_is_that_run(tmp_path, fake, monkeypatch):
    # Validation chose the DPT weight 0: ICA + OPA (its own beta 0) and DVA's seed 0 resolve to the same
    # overrides. The run is made once; the second row is that run, named so in the JSON and the table.
    runner.run_select(_ctx(tmp_path), tmp_path / "sel.json", [])
    sel = json.loads((tmp_path / "sel.json").read_text())
    sel["chosen_tokens"]["opa"] = ["--loss.beta", "0"]
    (tmp_path / "sel.json").write_text(json.dumps(sel))
    monkeypatch.setattr(O, "galleries", lambda *a, **k: ([], []))
    args = runner.build_parser().parse_args(["--dataset", "cars196", "--select", str(tmp_path / "sel.json")])
    n_select = len(fake())
    res = runner.run_main(_ctx(tmp_path), args, tmp_path / "main.json", [])
    rows = {r["name"]: r for r in res["rows"]}
    assert len(fake()) - n_select == 10  # 11 runs planned, one of them twice
    dva0 = rows["dva"]["runs"][0]["folder"]
    assert dva0.startswith("dva_s0_") and not any(f.startswith("ica_opa") for f in fake())
    assert rows["ica_opa"]["same_runs_as"] == [dva0] and rows["ica_opa"]["runs"][0]["same_run_as"] == dva0
    assert list(rows["ica_opa"]["stats"]["map@r"]) == [rows["dva"]["runs"][0]["metrics"]["map@r"] * 100, 0.0]
    assert "same_runs_as" not in rows["dva"] and "same_runs_as" not in rows["ica"]
    notes = R.same_run_notes(res)
    assert notes == [f"{rows['ica_opa']['label']}, seed 0: the same settings as {rows['dva']['label']}'s seed-0 "
                     "run (the overrides are equal once the chosen values are filled in): that run, not a second one."]
    assert notes[0] in R.render_all([res])
    # Resumed: the same again, nothing trained. --reuse in a fresh work folder: DVA's run is DVA's own (the
    # copy under ICA + OPA is not taken for it), and ICA + OPA is that run again.
    n = len(fake())
    assert runner.run_main(_ctx(tmp_path), args, tmp_path / "main.json", [])["rows"] == res["rows"]
    ctx = _ctx(tmp_path, reuse=[str(tmp_path / "main.json")], work="work2")
    again = {r["name"]: r for r in runner.run_main(ctx, args, tmp_path / "main2.json", [])["rows"]}
    assert len(fake()) == n and "same_runs_as" not in again["dva"]
    assert again["ica_opa"]["same_runs_as"] == [dva0] and R.same_run_notes({"rows": list(again.values())}) == notes
    # A later --rows sitting of ICA + OPA alone finds DVA's finished run in the work folder.
    args_rows = runner.build_parser().parse_args(["--dataset", "cars196", "--select", str(tmp_path / "sel.json"),
                                                  "--rows", "ica_opa"])
    part = runner.run_main(_ctx(tmp_path), args_rows, tmp_path / "part.json", [])
    assert len(fake()) == n and part["rows"][0]["same_runs_as"] == [dva0]
    assert R.same_run_notes(part) == [f"{rows['ica_opa']['label']}, seed 0: the same settings as the run in "
                                      f"`{dva0}` (the overrides are equal once the chosen values are filled in): "
                                      "that run, not a second one."]


def test_main_refuses_without_the_select_json(tmp_path):
    args = runner.build_parser().parse_args(["--dataset", "cars196", "--select", str(tmp_path / "none.json")])
    with pytest.raises(FileNotFoundError, match="run --profile select first"):
        runner.run_main(_ctx(tmp_path), args, tmp_path / "main.json", [])


def test_run_one_refuses_a_folder_of_other_settings(tmp_path):
    spec = P.RunSpec("ica", "train", 0, ["--ica.rank", "4"], "ica_s0_x", ["--ica.rank", "4"])
    out = tmp_path / spec.tag
    out.mkdir()
    (out / "spec.json").write_text(json.dumps({"overrides": ["--ica.rank", "8"]}))
    with pytest.raises(RuntimeError, match="other settings"):
        runner.run_one(spec, out, tmp_path, 1, {})


# ----------------------------------------------------------------------------- isolation (one real run)
def test_select_run_never_opens_a_test_image(tmp_path, monkeypatch):
    """A select candidate trains and validates with the test classes' files unreadable, and no
    image of a test class is ever opened (spy); without the withholding the split would hold them."""
    import PIL.Image

    from dva.config import load_config
    from dva.data import load_split, make_synthetic
    from dva_train.train import prepare_data

    root = make_synthetic(str(tmp_path / "data"), num_classes=8, per_class=6, size=64, seed=0)
    test = {r.path for r in load_split("synthetic", root, "open").test}
    for p in test:
        Path(p).write_bytes(b"poison: not an image")
    ds = P.DatasetSpec("synth", "synthetic", "X", "x", "bird", 2, (24, 24))
    bb = P.TABLE.backbones["mobilenetv2"]._replace(img_size=64)
    common = P.common_overrides(ds, root, tmp_path / "cache", 1, bb, 2)
    run = P.select_stage_runs(P.TABLE, "mobilenetv2", common, 0, {})[0]
    ov = run.overrides + ["--train.steps", "2", "--backbone.img_size", "64"]
    # The control: without the withholding the trainer's split holds the (poisoned) test images.
    assert set(prepare_data(load_config("demo", ov)).test_paths) == test
    opened: list[str] = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda fp, *a, **k: (opened.append(str(fp)), real_open(fp, *a, **k))[1])
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": run.name, "kind": "train", "overrides": ov, "out": str(tmp_path / "run"),
                                "threads": 1, "validation_only": True}))
    assert runner._worker(str(spec)) == 0
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    assert res["eval_split"] == "val" and res["steps"] == 2 and res["test_metrics"] is None
    assert opened and not set(opened) & test  # images were read (the spy works), none of a test class
    assert S.val_score(res, "map@r")[0] > 0


# ----------------------------------------------------------------------------- OOD matrix and rendering
def _row(name, label, r1, mp, ood, seeds=(0,), pct=1.0, steps=184):
    return {"name": name, "label": label, "seeds": list(seeds), "seeds_label": f"{len(seeds)} seed",
            "steps": steps, "trainable_pct": pct,
            "stats": {"recall@1": [r1, 0.5], "map@r": [mp, 0.1],
                      "ood": {g: {"recall@1": [v, 0.0], "map@r": [1.0, 0.0]} for g, v in ood.items()}}}


def _main(dataset="cars196", backbone="mobilenetv2", ood=("aircraft47", "cub100", "pets37")):
    rows = [_row("frozen", "frozen backbone", 40.0, 5.0, dict(zip(ood, (40.0, 50.0, 60.0)))),
            _row("full", "full fine-tune", 60.0, 10.0, dict(zip(ood, (35.0, 44.0, 57.0))), seeds=(0, 1, 2)),
            _row("dva", "DVA", 55.0, 8.0, dict(zip(ood, (40.0, 49.0, 58.0))), seeds=(0, 1, 2)),
            _row("ica", "ICA", 50.0, 7.0, {ood[0]: 39.0})]  # one gallery not scored: no mean
    return {"settings": {"dataset": dataset, "backbone": backbone, "profile": "main", "ood": list(ood)}, "rows": rows}


def test_ood_matrix_mean_and_changes():
    m = O.matrix([_main(), _main("aircraft47", ood=("cars196", "cub100", "pets37"))])
    rows = {r["name"]: r for r in m["mobilenetv2"]["cars196"]}
    assert rows["frozen"]["mean_ood"] == pytest.approx(50.0)
    assert rows["full"]["mean_ood"] == pytest.approx((35 + 44 + 57) / 3)
    assert rows["dva"]["ood_change"] == pytest.approx((40 + 49 + 58) / 3 - 50.0)
    assert rows["dva"]["id_gain"] == pytest.approx(15.0) and rows["frozen"]["id_gain"] == 0.0
    assert rows["ica"]["mean_ood"] is None and rows["ica"]["ood_change"] is None
    assert list(m["mobilenetv2"]) == ["cars196", "aircraft47"]
    with pytest.raises(ValueError, match="two main results"):
        O.matrix([_main(), _main()])
    assert O.gap_closed(55.0, 40.0, 60.0) == pytest.approx(75.0) and O.gap_closed(55.0, 60.0, 60.0) is None
    assert O.ood_names(P.TABLE, "cars196") == ["cub100", "aircraft47", "pets37"]


def test_galleries_skip_absent_data(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "locate", lambda spec, explicit=None: None)
    monkeypatch.setattr(O, "locate", lambda spec, explicit=None: tmp_path if spec.name == "pets37" else None)
    found, missing = O.galleries(P.TABLE, "cub100")
    assert missing == ["cars196", "aircraft47"]
    assert found == [O.Gallery("pets37", "folder", str(tmp_path / "images"), "all")]


def test_render_tables_from_synthetic_results(tmp_path):
    main = _main()
    table = R.main_table(main)
    lines = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]] for ln in table.splitlines()[2:]}
    assert lines["DVA"][:6] == ["3 seed", "55.0 ± 0.5", "8.0 ± 0.1", "+15.0", "75", "1.00%"]
    assert lines["full fine-tune"][4] == "-" and lines["ICA"][4] == "50"  # (50 - 40) / (60 - 40)
    assert lines["frozen backbone"][1] == "40.0" and lines["frozen backbone"][3] == "-"
    ood = R.ood_table(O.matrix([main])["mobilenetv2"])
    dva = next(ln for ln in ood.splitlines() if "| DVA |" in ln)
    assert [c.strip() for c in dva.split("|")[3:-1]] == ["55.0", "8.0", "40.0", "49.0", "58.0", "49.0", "-1.0"]
    dm = R.dataset_method_table([main, _main("aircraft47", ood=("cars196", "cub100", "pets37"))])
    assert dm.splitlines()[0] == "| backbone | ID dataset | frozen backbone | full fine-tune | ICA | DVA |"
    assert dm.splitlines()[2] == "| mobilenetv2 | cars196 | 40.0 | 60.0 | 50.0 | 55.0 |"
    sel = {"settings": {"dataset": "cars196", "backbone": "mobilenetv2", "profile": "select"}, "complete": False,
           "stages": [{"name": "lr", "candidates": [
               {"name": "lr1e-3", "overrides": ["--train.lr", "1e-3"], "val_metrics": {"map@r": 0.3, "recall@1": 0.6},
                "trainable_pct": 1.49, "chosen": False},
               {"name": "lr3e-3", "overrides": ["--train.lr", "3e-3"], "val_metrics": {"map@r": 0.35, "recall@1": 0.6},
                "trainable_pct": 1.49, "chosen": True}]}]}
    st = R.select_table(sel)
    assert st.splitlines()[3] == "| lr | lr3e-3 | `--train.lr 3e-3` | 35.0 | 60.0 | 1.49% | **chosen** |"
    text = R.render_all([sel, main])
    assert "(unfinished" in text and "### OOD matrix, mobilenetv2" in text and "### R@1, dataset x method" in text
    fig = R.figure([main], tmp_path / "fig.png")
    assert fig.is_file() and fig.stat().st_size > 1000


def test_render_command_writes_only_where_asked(tmp_path, capsys):
    (tmp_path / "m.json").write_text(json.dumps(_main()))
    assert runner.main(["--render", str(tmp_path / "m.json"), "--markdown", str(tmp_path / "t.md")]) == 0
    assert "### cars196 x mobilenetv2: main" in capsys.readouterr().out
    assert (tmp_path / "t.md").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "t.md"]


# ----------------------------------------------------------------------------- real data (skip when absent)
@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASETS)
def test_real_dataset_counts_match_the_table(dataset):
    from dva.data import load_split

    spec = P.TABLE.datasets[dataset]
    folder = P.locate(spec)
    if folder is None:
        pytest.skip(f"{dataset} not found (set {spec.env} or place it at ../shared/data/{dataset})")
    s = load_split(spec.reader, P.reader_root(spec, folder), "open")
    assert (len(s.train), len(s.test)) == spec.images
    assert 0 < spec.val_classes < len(s.train_classes) // 2


def test_cli_errors_are_one_line_and_rows_split_a_profile(capsys):
    args = ["--dataset", "aircraft47", "--backbone", "vit_s14", "--plan", "--root", "/nonexistent"]
    assert runner.main(args + ["--rows", "nope"]) == 2
    assert "unknown row(s) ['nope']" in capsys.readouterr().err
    assert runner.main(args + ["--rows", "full,frozen"]) == 0
    out = capsys.readouterr().out
    assert "full [1 seed]" in out and "frozen [" in out and "dva" not in out
    with pytest.raises(SystemExit, match="for the main profile"):
        runner.main(["--dataset", "cub100", "--profile", "select", "--quick", "--plan"])
    # Lite0 and Lite1 run two main rows (the frozen backbone and the tuned DVA row of their presets).
    assert runner.main(["--dataset", "cub100", "--backbone", "lite1", "--profile", "select", "--plan",
                        "--root", "/nonexistent"]) == 0
    assert "tf_efficientnet_lite1" in capsys.readouterr().out
    assert runner.main(["--dataset", "cub100", "--backbone", "lite0", "--plan", "--rows", "full",
                        "--root", "/nonexistent"]) == 2
    assert "unknown row(s) ['full']; the main rows of lite0: ['dva', 'frozen']" in capsys.readouterr().err


def test_backbone_main_rows_are_checked(tmp_path):
    t = P.TABLE
    every = tuple(t.main_rows)
    assert {b: spec.main_rows for b, spec in t.backbones.items()} == {
        "mobilenetv2": every, "lite2": every, "vit_s14": every, "lite0": ("dva", "frozen"), "lite1": ("dva", "frozen")}
    # Lite0 and Lite1 choose among Lite2's placements (the same seven-stage network).
    assert t.stages[0].of("lite0") == t.stages[0].of("lite1") == t.stages[0].of("lite2")
    main = P.main_runs(t, t.datasets["cub100"], "lite0", [], {"adapters": [], "trained": [], "opa": []}, [0])
    assert [name for name, *_ in main] == ["dva", "frozen"]
    text = P.TABLE_FILE.read_text()
    (tmp_path / "h.yaml").write_text(text.replace('main_rows: ["frozen", "dva"]}', 'main_rows: ["final"]}', 1))
    with pytest.raises(ValueError, match=r"backbones.lite0.main_rows: main rows \(.*\), got \['final'\]"):
        P.load_table(tmp_path / "h.yaml")


@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASETS)
def test_real_select_split_holds_no_test_class(dataset, tmp_path):
    from dva.config import load_config
    from dva.data import load_split
    from dva_train.train import prepare_data

    spec = P.TABLE.datasets[dataset]
    folder = P.locate(spec)
    if folder is None:
        pytest.skip(f"{dataset} not found (set {spec.env} or place it at ../shared/data/{dataset})")
    root = P.reader_root(spec, folder)
    full = load_split(spec.reader, root, "open")
    common = P.common_overrides(spec, root, tmp_path, 1, P.TABLE.backbones["mobilenetv2"], spec.val_classes)
    with runner.test_split_withheld():
        data = prepare_data(load_config("demo", common))
    val = set(full.train_classes[-spec.val_classes:])
    assert data.eval_name == "val" and data.test_paths == [] and set(data.eval_labels.tolist()) == val
    seen = set(data.train_paths) | set(data.eval_paths)
    assert len(seen) == spec.images[0] and not seen & {r.path for r in full.test}


@pytest.mark.slow
def test_real_ood_galleries_of_cars196():
    gals, missing = O.galleries(P.TABLE, "cars196")
    if missing:
        pytest.skip(f"OOD data not found: {missing}")
    sizes = {g.name: len(O.gallery_images(g)[0]) for g in gals}
    assert sizes == {"cub100": 2953, "aircraft47": 1551, "pets37": 370}


def test_a_stopped_profile_goes_on_from_its_partial_file_on_another_machine(tmp_path, fake, monkeypatch):
    """Every finished run goes to the profile's partial file as it finishes: a sitting stopped on one machine
    (its run folders left behind) goes on from the repository on another, training only what was not
    finished; the file is removed once the profile's JSON is written."""
    runner.run_select(_ctx(tmp_path), tmp_path / "sel.json", [])
    assert not runner.partial_path(tmp_path / "sel.json").exists()  # a complete select profile
    monkeypatch.setattr(O, "galleries", lambda *a, **k: ([], []))
    args = runner.build_parser().parse_args(["--dataset", "cars196", "--select", str(tmp_path / "sel.json")])
    out = tmp_path / "results" / "cars196_mobilenetv2_main.json"
    monkeypatch.setenv("FAKE_FAIL", "--train.seed 2")  # stopped at the first third seed
    before = len(fake())
    with pytest.raises(RuntimeError, match="failed"):
        runner.run_main(_ctx(tmp_path), args, out, [])
    partial = runner.partial_path(out)
    assert partial.parent.name == "partial" and partial.name == out.name and not out.exists()
    finished = {r["folder"] for r in json.loads(partial.read_text())["runs"]}
    tried = fake()[before:]
    assert finished == set(tried[:-1]) and tried[-1] not in finished and len(finished) >= 2
    monkeypatch.delenv("FAKE_FAIL")
    ctx = _ctx(tmp_path, work="another_machine")  # no run folders: what main() reuses is the files
    assert runner.own_runs(out) == [str(partial)]
    ctx.reused.update(runner.reuse_index(runner.own_runs(out)))
    n = len(fake())
    res = runner.run_main(ctx, args, out, [])
    assert not set(fake()[n:]) & finished and tried[-1] in fake()[n:]  # only the unfinished runs ran
    assert len(res["rows"]) == 7 and not partial.exists() and runner.own_runs(out) == [str(out)]
    whole = runner.run_main(_ctx(tmp_path, work="third"), args, tmp_path / "ref.json", [])  # uninterrupted
    assert [r["stats"]["map@r"] for r in res["rows"]] == [r["stats"]["map@r"] for r in whole["rows"]]


def test_the_plan_counts_the_committed_runs_of_its_own_json_as_done(tmp_path, capsys):
    """main() takes back the profile's own finished runs (its JSON, its partial file): --plan marks them [done]."""
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps({"settings": {"dataset": "cars196", "backbone": "mobilenetv2", "profile": "select"},
                               "complete": True, "chosen_tokens": {"adapters": ["--ica.rank", "8"],
                                                                   "trained": ["--train.steps", "736"],
                                                                   "opa": ["--loss.beta", "0"]}}))
    out = tmp_path / "main.json"
    argv = ["--dataset", "cars196", "--profile", "main", "--plan", "--root", "/nonexistent", "--select", str(sel),
            "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    assert runner.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    frozen = next(t for ln in lines for t in ln.split() if t.startswith("frozen_s0_"))
    assert not any(ln.endswith("[done]") for ln in lines)
    runner.record_partial(out, {"folder": frozen, "wall_seconds": 3.0, "metrics": {}})
    assert runner.main(argv) == 0
    assert next(ln for ln in capsys.readouterr().out.splitlines() if frozen in ln).endswith("[done]")
