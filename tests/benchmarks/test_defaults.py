"""The defaults benchmark (benchmarks/defaults/): the default command, its record, resume, the budget fit, rendering.

Runs go to a fake ``dva`` (a script that writes a summary.json and a log.jsonl, no torch); the
datasets are small generated folders. Nothing here trains.
"""
from __future__ import annotations

import json
import math
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import _common as C
from benchmarks.defaults import budget as B
from benchmarks.defaults import plan as P
from benchmarks.defaults import record as R
from benchmarks.defaults import render as V
from benchmarks.defaults import run as runner

# ----------------------------------------------------------------------------- a fake `dva`
FAKE_DVA = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    argv = sys.argv[1:]
    with open(os.environ["FAKE_LOG"], "a") as f:
        f.write(json.dumps(argv) + "\\n")
    kv = dict(zip(argv[1::2], argv[2::2]))
    out = Path(kv["--output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    preset = kv["--preset"]
    bump = {"mobilenetv2": 0.05, "lite2": 0.02}.get(preset, -0.01)  # lite0/lite1: below frozen
    select = os.environ.get("FAKE_SELECT", "val")
    summary = {"status": "completed", "steps": 150, "eval_split": "val",
               "budget": {"steps": 200, "rule": "train.steps=auto: 2 epochs of 30 batches = 60 steps, clamped to "
                                                "[200, 2000] (--train.steps N or --train.epochs N to choose)"},
               "batch": {"classes_per_batch": 8, "images_per_class": 4},
               "early_stop": "early stop at step 150 of 200: 3 evaluations without a better validation MAP@R",
               "checkpoints": {"best": {"path": "b", "step": 120, "map@r": 0.5, "split": select}},
               "test_model": {"path": "b", "step": 120, "chosen_on": select},
               "metrics": {"recall@1": 0.9, "map@r": 0.5}, "frozen_metrics": {"recall@1": 0.85, "map@r": 0.45},
               "test_metrics": {"recall@1": 0.60 + bump, "map@r": 0.30 + bump},
               "test_frozen_metrics": {"recall@1": 0.60, "map@r": 0.30},
               "train_seconds": 120.0, "prep_seconds": 5.0, "params": {"trainable_params": 33152}}
    (out / "summary.json").write_text(json.dumps(summary))
    rows = [{"kind": "validation", "message": "data.val_classes=auto: 2 of the 6 training classes are held out for "
                                              "validation (periodic evaluation)"},
            {"kind": "setup", "train_images": 960, "eval_images": 40}]
    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    sys.exit(int(os.environ.get("FAKE_EXIT", "0")))
''')


@pytest.fixture
def fake_dva(tmp_path, monkeypatch):
    """``dva`` -> the fake script; returns a reader of the argv of every invocation."""
    script = tmp_path / "fake_dva.py"
    script.write_text(FAKE_DVA)
    log = tmp_path / "invocations.log"
    log.write_text("")
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setattr(runner, "dva_command", lambda: [sys.executable, str(script)])
    return lambda: [json.loads(x) for x in log.read_text().splitlines()]


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory) -> Path:
    """A small class-per-folder dataset (12 classes x 4 images): the open split trains on 6 classes."""
    from dva.data import make_synthetic

    return Path(make_synthetic(str(tmp_path_factory.mktemp("folder")), num_classes=12, per_class=4, size=32, seed=0))


def _main(tmp_path, folder_root, *extra: str, work: str = "work") -> int:
    return runner.main(["--root", f"pets37={folder_root}", f"aircraft47={folder_root}", "--work-dir",
                        str(tmp_path / work), "--out", str(tmp_path / "defaults.json"), *extra])


# ----------------------------------------------------------------------------- the command
def test_argv_is_exactly_the_default_command(tmp_path):
    pair = runner.make_pair("lite2", "pets37", "ROOT", tmp_path / "w", tmp_path / "c", 2)
    run_dir = str(tmp_path / "w" / f"lite2_pets37_{pair.digest}" / "run")
    assert pair.argv == ["dva", "train", "--preset", "lite2", "--data.dataset", "folder", "--data.root", "ROOT",
                         "--output_dir", run_dir, "--train.threads", "2", "--train.cache_dir", str(tmp_path / "c")]
    assert P.user_command(pair.argv) == pair.argv[:10]
    assert runner.make_pair("mobilenetv2", "cub100", "R", tmp_path, tmp_path, 1).argv[5] == "cub100"  # its reader
    with pytest.raises(ValueError, match="extra/repeated"):
        P.check_argv(pair.argv + ["--train.steps", "100"])
    with pytest.raises(ValueError, match="missing"):
        P.check_argv(pair.argv[:6])
    # Places and machine settings do not change the settings (same folder); another preset does.
    again = runner.make_pair("lite2", "pets37", "OTHER", tmp_path / "x", tmp_path / "y", 1)
    assert again.digest == pair.digest
    assert runner.make_pair("lite0", "pets37", "ROOT", tmp_path, tmp_path, 2).digest != pair.digest
    assert pair.settings["command"] == ["dva", "train", "--preset", "lite2", "--data.dataset", "folder"]
    assert pair.settings["config"]["train"]["steps"] == 0 and "root" not in pair.settings["config"]["data"]


def test_the_run_gets_only_the_default_command(tmp_path, fake_dva, folder_root):
    assert _main(tmp_path, folder_root, "--presets", "lite2", "--datasets", "pets37") == 0
    (called,) = fake_dva()
    rec = json.loads((tmp_path / "defaults.json").read_text())["runs"][0]
    assert called == rec["argv"][1:] and rec["argv"][0] == "dva"
    assert rec["argv"][rec["argv"].index("--data.root") + 1] == str(folder_root / "images")  # pets37's subfolder
    assert rec["command"].split() == rec["argv"][:10]
    # Measured as the datasets harness measures its runs (benchmarks._common.run_measured).
    assert rec["exit_code"] == 0 and rec["wall_seconds"] > 0 and rec["peak_rss_mb"] > 0
    assert len(rec["loadavg_1m"]) == 2 and "commit" in rec and rec["executable"][-1].endswith("fake_dva.py")
    # The fake's summary: 150 of 200 steps, 2 of 6 classes held out, chosen on validation at step 120.
    assert (rec["steps"], rec["budget_steps"], rec["val_classes"], rec["selection_split"], rec["model_step"]) == \
        (150, 200, 2, "val", 120)
    assert rec["compare"]["d_map_r_vs_frozen"] == pytest.approx(2.0) and rec["tuned"] is None  # pets37: none


# ----------------------------------------------------------------------------- summary parsing
def _summary(split="val", **more):
    s = {"status": "completed", "steps": 120, "eval_split": split,
         "budget": {"steps": 200, "rule": "train.steps=auto: 2 epochs of 73 batches = 146 steps, clamped to "
                                          "[200, 2000] (--train.steps N or --train.epochs N to choose)"},
         "batch": {"classes_per_batch": 8, "images_per_class": 4}, "early_stop": None,
         "metrics": {"recall@1": 0.9, "map@r": 0.5}, "frozen_metrics": {"recall@1": 0.8, "map@r": 0.4},
         "test_metrics": {"recall@1": 0.7, "map@r": 0.3}, "test_frozen_metrics": {"recall@1": 0.6, "map@r": 0.2},
         "checkpoints": {"best": {"step": 100, "split": split}}, "test_model": {"step": 100, "chosen_on": "val"},
         "train_seconds": 60.0}
    return {**s, **more}


def test_summary_parsing_validated_and_too_few_classes():
    log = {"setup": {"train_images": 2349, "eval_images": 600},
           "validation": {"message": "data.val_classes=auto: 10 of the 50 training classes are held out for validation"}}
    rec = R.parse_run(_summary(), log)
    assert (rec["budget_steps"], rec["steps"], rec["budget_source"], rec["budget_raw"], rec["budget_bound"]) == \
        (200, 120, "auto", 146, "min")
    assert (rec["val_classes"], rec["train_classes_before_holdout"], rec["train_images"]) == (10, 50, 2349)
    assert rec["val_trained"] == {"recall@1": 0.9, "map@r": 0.5} and rec["val_frozen"]["map@r"] == 0.4
    assert rec["test_trained"]["map@r"] == 0.3 and rec["test_frozen"]["recall@1"] == 0.6
    assert rec["selection_split"] == "val" and rec["batch"] == [8, 4] and rec["model_step"] == 100
    # Too few classes: evaluation on the test split, nothing chosen, no validation figures.
    few = _summary("test", test_metrics=None, test_frozen_metrics=None, test_model=None, checkpoints={"best": None})
    log = {"validation": {"message": "data.val_classes=auto: the training split has 6 classes (< 10), too few"}}
    rec = R.parse_run(few, log)
    assert rec["val_trained"] is None and rec["test_trained"] == {"recall@1": 0.9, "map@r": 0.5}
    assert rec["test_frozen"]["map@r"] == 0.4 and rec["selection_split"] is None
    assert (rec["val_classes"], rec["train_classes_before_holdout"]) == (0, 6)
    assert R.budget_source("train.steps=300") == {"source": "steps", "raw": None, "bound": None}
    assert R.budget_source("train.steps=auto: 2 epochs of 1500 batches = 3000 steps, clamped to [200, 2000]")[
        "bound"] == "max"


def test_a_summary_that_selects_or_stops_on_test_is_refused():
    with pytest.raises(R.SelectedOnTestError, match="chosen on the test split"):
        R.selection_split(_summary("test"))
    with pytest.raises(R.SelectedOnTestError, match="chosen on the test split"):
        R.selection_split(_summary(test_model={"step": 3, "chosen_on": "test"}))
    with pytest.raises(R.SelectedOnTestError, match="stopped early"):
        R.selection_split(_summary("test", checkpoints={}, test_model=None, early_stop="early stop at step 9"))
    assert R.selection_split(_summary()) == "val"


def test_the_harness_refuses_a_run_that_selected_on_test(tmp_path, fake_dva, folder_root, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_SELECT", "test")
    assert _main(tmp_path, folder_root, "--presets", "mobilenetv2", "--datasets", "pets37") == 2
    assert "chosen on the test split" in capsys.readouterr().err
    assert len(fake_dva()) == 1 and not list((tmp_path / "work").glob("*/record.json"))
    assert not (tmp_path / "defaults.json").exists()


# ----------------------------------------------------------------------------- tuned row
def _main_json(folder: Path, dataset: str, backbone: str, r1: float, mp: float) -> None:
    rows = [{"name": "frozen", "label": "frozen backbone", "stats": {"recall@1": [50.0, 0.0], "map@r": [20.0, 0.0]}},
            {"name": "dva", "label": "DVA", "seeds": [0, 1, 2], "steps": 368,
             "stats": {"recall@1": [r1, 0.4], "map@r": [mp, 0.2]}}]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{dataset}_{backbone}_main.json").write_text(json.dumps(
        {"settings": {"dataset": dataset, "backbone": backbone}, "rows": rows}))


def test_tuned_row_lookup(tmp_path):
    _main_json(tmp_path, "cub100", "lite2", 71.5, 30.25)
    row = R.tuned_row("cub100", "lite2", tmp_path)
    assert (row["r1"], row["r1_sd"], row["map_r"], row["seeds"], row["steps"]) == (71.5, 0.4, 30.25, [0, 1, 2], 368)
    assert R.tuned_row("cars196", "lite2", tmp_path) is None  # no main JSON yet
    assert R.tuned_row("cub100", None, tmp_path) is None  # a preset of no harness backbone
    (tmp_path / "cars196_lite2_main.json").write_text(json.dumps({"settings": {"dataset": "cub100",
                                                                               "backbone": "lite2"}}))
    with pytest.raises(ValueError, match="not \\(cars196, lite2\\)"):
        R.tuned_row("cars196", "lite2", tmp_path)
    assert [P.harness_backbone(p) for p in ("mobilenetv2", "lite0", "lite1", "lite2", "vit_s14", "demo")] == \
        ["mobilenetv2", "lite0", "lite1", "lite2", "vit_s14", None]
    c = R.compare({"test_trained": {"recall@1": 0.72, "map@r": 0.3}, "test_frozen": {"recall@1": 0.7, "map@r": 0.31}},
                  row)
    assert c["d_r1_vs_tuned"] == pytest.approx(0.5) and c["d_map_r_vs_frozen"] == pytest.approx(-1.0)
    assert c["d_r1_vs_frozen"] == pytest.approx(2.0) and c["tuned_r1"] == 71.5


# ----------------------------------------------------------------------------- resume, merge, reuse
def test_resume_refuse_restart_merge_and_reuse(tmp_path, fake_dva, folder_root, capsys):
    assert _main(tmp_path, folder_root, "--presets", "mobilenetv2", "--datasets", "pets37") == 0
    assert len(fake_dva()) == 1
    # Finished: read back, not run again.
    assert _main(tmp_path, folder_root, "--presets", "mobilenetv2", "--datasets", "pets37") == 0
    assert len(fake_dva()) == 1 and "[done]" in capsys.readouterr().out
    # Another subset merges into the same JSON.
    assert _main(tmp_path, folder_root, "--presets", "mobilenetv2", "--datasets", "aircraft47") == 0
    res = json.loads((tmp_path / "defaults.json").read_text())
    assert [(r["preset"], r["dataset"]) for r in res["runs"]] == [("mobilenetv2", "aircraft47"),
                                                                   ("mobilenetv2", "pets37")]
    assert set(res["datasets"]) == {"pets37", "aircraft47"} and len(fake_dva()) == 2
    # A run killed part-way (a run folder, no record) starts again from scratch.
    folder = next((tmp_path / "work").glob("mobilenetv2_pets37_*"))
    (folder / "record.json").unlink()
    (folder / "run" / "stale.txt").write_text("left by a killed run")
    assert _main(tmp_path, folder_root, "--presets", "mobilenetv2", "--datasets", "pets37", "--out",
                 str(tmp_path / "other.json")) == 0
    assert len(fake_dva()) == 3 and not (folder / "run" / "stale.txt").exists()
    # A folder of other settings is refused.
    spec = json.loads((folder / "spec.json").read_text())
    spec["settings"]["auto_steps"]["min"] += 1
    (folder / "spec.json").write_text(json.dumps(spec))
    assert _main(tmp_path, folder_root, "--presets", "mobilenetv2", "--datasets", "pets37") == 2
    assert "other settings" in capsys.readouterr().err and len(fake_dva()) == 3
    # --reuse in a fresh work folder: the runs of the same settings come from the file.
    assert _main(tmp_path, folder_root, "--datasets", "pets37,aircraft47", "--presets", "mobilenetv2",
                 "--reuse", str(tmp_path / "defaults.json"), "--out", str(tmp_path / "r.json"), work="w2") == 0
    assert len(fake_dva()) == 3
    again = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert all(r["reused_from"].endswith("defaults.json") for r in again)
    assert [r["compare"] for r in again] == [r["compare"] for r in res["runs"]]


# ----------------------------------------------------------------------------- rendering
def _record(preset, dataset, r1, mp, fr1=60.0, fmp=30.0, split="val", steps=200):
    return {"preset": preset, "dataset": dataset, "backbone": P.harness_backbone(preset), "steps": steps,
            "budget_steps": 200, "budget_source": "auto", "budget_bound": "min", "early_stop": None,
            "val_classes": 10, "train_classes_before_holdout": 50, "selection_split": split, "eval_split": "val",
            "test_trained": {"recall@1": r1 / 100, "map@r": mp / 100},
            "test_frozen": {"recall@1": fr1 / 100, "map@r": fmp / 100}, "train_seconds": 90.0,
            "auto_steps": {"epochs": 2, "min": 200, "max": 2000}}


def test_render_of_a_fake_result(tmp_path):
    results = tmp_path / "datasets"
    _main_json(results, "cub100", "mobilenetv2", 70.0, 35.0)
    _main_json(results, "cub100", "lite2", 75.0, 38.0)
    runs = [_record("mobilenetv2", "cub100", 69.5, 34.0), _record("lite2", "cub100", 73.5, 36.0, steps=150),
            _record("lite0", "cub100", 66.0, 31.0), _record("mobilenetv2", "pets37", 80.0, 29.0, fmp=30.0),
            _record("lite2", "pets37", 82.0, 33.5, split=None)]
    res = runner.build_result(runs, {}, [], tmp_path / "d.json", 2, results)
    text = V.render_section(res)
    lines = {tuple(c.strip() for c in ln.split("|")[1:3]): ln for ln in text.splitlines() if ln.startswith("| ")}
    # mobilenetv2/cub100: frozen 60.0/30.0, default 69.5/34.0, +9.5/+4.0, tuned 70.0, -0.5, 1.5 min.
    assert "| 60.0 / 30.0 | 69.5 / 34.0 | +9.5 / +4.0 | 70.0 | -0.5 | 1.5 |" in lines[("mobilenetv2", "cub100")]
    assert "150 of 200 (auto, floor)" in lines[("lite2", "cub100")] and "| 75.0 | -1.5 |" in lines[("lite2", "cub100")]
    assert "| - | - |" in lines[("lite0", "cub100")] and "10 of 50" in lines[("lite0", "cub100")]
    t = {x["name"]: x for x in V.targets(res)}
    assert t["id_r1"]["verdict"] == "fails" and "lite2/cub100 (-1.5)" in t["id_r1"]["text"]
    assert t["id_r1"]["text"].startswith("no more than 1.0 R@1 below the tuned DVA row (the issue's \"within 1.0\")")
    # What the tuned column is (its budget and seeds), said under the table: one line per dataset.
    assert "train the budget their select profile chose, with no early stopping: mobilenetv2/cub100 368 steps, 3 seed(s); lite2/cub100 368 steps, 3 seed(s)." in text
    assert "held on 1 of 2 pairs" in t["id_r1"]["text"] and "no tuned row: lite0/cub100" in t["id_r1"]["text"]
    assert t["pets37_map_r"]["verdict"] == "fails" and "below frozen: mobilenetv2" in t["pets37_map_r"]["text"]
    assert "mobilenetv2 -1.0, lite2 +3.5" in t["pets37_map_r"]["text"]
    assert t["no_test_selection"]["verdict"] == "holds"
    assert "of 5 runs, 4 chose their model on validation classes, 1 chose nothing" in t["no_test_selection"]["text"]
    assert ": no tuned row (the datasets harness tunes" not in text  # every preset has a harness backbone now
    # Every fake record says the old rule (2 epochs, floor 200), not the one in force: named so.
    assert "earlier step-budget rule than the one in force (clamp(6 epochs, 240, 2000))" in text
    assert "mobilenetv2 x cub100, mobilenetv2 x pets37, lite0 x cub100, lite2 x cub100, lite2 x pets37;" in text
    from dva.config import AUTO_STEPS

    current = [{**r, "auto_steps": dict(AUTO_STEPS)} for r in runs]
    assert "earlier step-budget rule" not in V.render_section(runner.build_result(current, {}, [], tmp_path / "d.json",
                                                                                  2, results))
    # Only passing pairs, every pair run: the first target holds.
    ok = [_record(p, d, 80.0, 40.0) for p in ("mobilenetv2", "lite2") for d in ("cub100",)]
    res = runner.build_result(ok, {}, [], tmp_path / "d.json", 2, results)
    res["settings"].update(harness_backbones={"mobilenetv2": "mobilenetv2", "lite2": "lite2"}, id_datasets=["cub100"])
    assert V.targets(res)[0]["verdict"] == "holds"
    res["runs"][0]["selection_split"] = "test"
    assert V.targets(res)[-1]["verdict"] == "fails" and "mobilenetv2/cub100" in V.targets(res)[-1]["text"]


# ----------------------------------------------------------------------------- the budget rule
def test_rule_steps_is_the_trainers_auto_budget():
    from dva.config import AUTO_STEPS, TrainConfig
    from dva_train.budget import resolve_budget

    for n, b in ((60, 32), (2349, 32), (3186, 32), (200_000, 32), (140, 28)):
        assert B.rule_steps(n, b, AUTO_STEPS["epochs"], AUTO_STEPS["min"], AUTO_STEPS["max"]) == \
            resolve_budget(TrainConfig(), n, b).steps


def test_the_rule_in_force_is_the_fit_of_the_committed_evidence():
    """AUTO_STEPS changes with the evidence only: the committed budgets' fit, the JSON written under it."""
    from dva.config import AUTO_STEPS

    res = json.loads(B.RESULT.read_text())
    assert len(res["points"]) >= 4 and {r["dataset"] for r in res["rows"]} >= {"cub100", "cars196", "aircraft47",
                                                                             "pets37"}
    fit = B.fit_rule(res["points"])
    assert {k: fit[k] for k in ("epochs", "min", "max")} == AUTO_STEPS == res["auto_steps"]
    assert "the rule in force is this rule" in B.render_budget(res)
    e, lo, hi = AUTO_STEPS["epochs"], AUTO_STEPS["min"], AUTO_STEPS["max"]  # the words that state the rule
    assert f"by default {e} passes over the training\n  images, at least {lo} and at most {hi} steps" in \
        (C.REPO / "README.md").read_text()
    assert f"`steps = clamp({e} ×\n  (n_train // batch), {lo}, {hi})`" in (C.REPO / "docs/METHOD.md").read_text()
    other = {**res, "fit": B.fit_rule(res["points"], current={"epochs": 2, "min": 200, "max": 2000})}
    assert "against" in B.render_budget(other) and "the rule in force is this rule" not in B.render_budget(other)


def test_fit_rule_on_hand_made_points():
    from dva.config import AUTO_STEPS

    # 10, 100 and 200 batches per epoch choosing 50, 300, 600 steps: 3 epochs, the small set at min 50.
    fit = B.fit_rule([(100, 10, 50), (1000, 10, 300), (2000, 10, 600)])
    assert (fit["epochs"], fit["min"], fit["max"]) == (3, 50, AUTO_STEPS["max"])  # max unconstrained: kept
    assert fit["loss"] == 0.0 and fit["steps"] == [50, 300, 600] and fit["tied_epochs"] == [3]
    assert fit["steps"][0] >= fit["min"] > 3 * (100 // 10)  # few images: the floor, not 3 epochs of 10 batches
    assert fit["current"]["min"] == AUTO_STEPS["min"] and fit["current"]["epochs"] == AUTO_STEPS["epochs"]
    # A large set choosing no more than a mid-sized one: max = that budget. Epochs 3 to 5 all fit
    # exactly under that max; the tie goes to the epochs nearest the current rule's (2 -> 3, 6 -> 5).
    pts = [(100, 10, 50), (1000, 10, 300), (5000, 10, 300)]
    fit = B.fit_rule(pts, current={"epochs": 2, "min": 200, "max": 2000})
    assert (fit["epochs"], fit["min"], fit["max"], fit["loss"]) == (3, 50, 300, 0.0)
    assert fit["tied_epochs"] == [3, 4, 5]
    assert B.fit_rule(pts, current={"epochs": 6, "min": 200, "max": 2000})["epochs"] == 5
    # Two sets on either side of every E from 4 to 7 (2.5 and 7.4 epochs chosen): the summed error ties.
    pts = [(140, 32, 240), (2349, 32, 184), (3186, 32, 736)]
    fit = B.fit_rule(pts, current={"epochs": 6, "min": 240, "max": 2000})
    assert fit["epochs"] == 6 and fit["tied_epochs"] == [4, 5, 6, 7]
    text = B.render_budget({"rows": [], "points": pts, "fit": fit, "auto_steps": {"epochs": 6, "min": 240,
                                                                                   "max": 2000}})
    assert "E = 4 to 7 fit these points equally well" in text and "the rule in force is this rule" in text
    # No exact fit: 5 epochs give 50 (chosen 40: at the floor it would be 40), 500 and 1000 exactly;
    # 4 epochs would miss two sets by 25%: the summed |log ratio| decides.
    fit = B.fit_rule([(100, 10, 40), (1000, 10, 500), (2000, 10, 1000)], current={"epochs": 2, "min": 1, "max": 10_000})
    assert (fit["epochs"], fit["min"], fit["max"]) == (5, 40, 10_000)
    assert fit["loss"] == pytest.approx(math.log(50 / 40)) and fit["steps"] == [50, 500, 1000]
    # Every set at the floor: any small epochs fit; the tie goes to the current rule's epochs.
    fit = B.fit_rule([(100, 10, 50), (120, 10, 50)], current={"epochs": 3, "min": 1, "max": 2000})
    assert (fit["epochs"], fit["min"], fit["loss"]) == (3, 50, 0.0)
    with pytest.raises(ValueError, match="positive"):
        B.fit_rule([(0, 10, 50)])


def _select(tmp_path, dataset="aircraft47", backbone="mobilenetv2", stage=True):
    run_dir = tmp_path / "runs" / "c0"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "log.jsonl").write_text(json.dumps({"kind": "setup", "train_images": 1120}) + "\n")

    def cand(name, steps, mp, chosen):
        return {"name": name, "steps": steps, "chosen": chosen, "val_metrics": {"recall@1": 0.6, "map@r": mp},
                "run": {"checkpoint": str(run_dir / "last.safetensors"), "eval_split": "val",
                        "batch": {"classes_per_batch": 8, "images_per_class": 4},
                        "checkpoints": {"best": {"split": "val"}}}}
    stages = [{"name": "placement", "candidates": []}]
    if stage:
        stages.append({"name": "steps", "metric": "map@r", "chosen": "st368",
                       "candidates": [cand("st184", 184, 0.16, False), cand("st368", 368, 0.17, True),
                                      cand("st736", 736, 0.165, False)]})
    return {"settings": {"dataset": dataset, "backbone": backbone, "val_classes": 5}, "stages": stages}


def test_budget_rows_evidence_and_render(tmp_path):
    a = tmp_path / "a_select.json"
    a.write_text(json.dumps(_select(tmp_path)))
    b = tmp_path / "b_select.json"
    b.write_text(json.dumps(_select(tmp_path, "cars196", stage=False)))
    res = B.evidence([a, b], None)
    row, missing = res["rows"]
    assert missing["stage_missing"] and missing["dataset"] == "cars196"
    assert (row["train_images"], row["train_images_source"], row["batch"], row["chosen_steps"]) == \
        (1120, "run log", 32, 368)
    assert [c["epochs"] for c in row["candidates"]] == pytest.approx([184 * 32 / 1120, 368 * 32 / 1120,
                                                                      736 * 32 / 1120])
    from dva.config import AUTO_STEPS
    auto = min(AUTO_STEPS["max"], max(AUTO_STEPS["min"], AUTO_STEPS["epochs"] * (1120 // 32)))
    assert row["auto"]["steps"] == auto == row["current_rule_steps"]
    assert res["points"] == [[1120, 32, 368]] and res["fit"]["min"] == 368 == row["fit_steps"]
    md = B.render_budget(res)
    assert "| aircraft47 | mobilenetv2 | 1120 | 32 | 368 | 10.5 | 60.0 | 17.0 | **chosen** |" in md
    assert "| cars196 | mobilenetv2 | - | - | steps stage not run yet |" in md
    assert f"| {auto} ({auto * 32 / 1120:.1f} epochs) | 368 | +0.00 |" in md
    assert "MIN = 368" in md and f"(E = {AUTO_STEPS['epochs']}, MIN = {AUTO_STEPS['min']}" in md


def test_pets37_selection_holds_out_breeds_and_runs_validation_only(tmp_path, monkeypatch):
    from benchmarks.datasets import run as drun
    from benchmarks.datasets.costs import steps_of
    from dva.data import make_synthetic

    root = make_synthetic(str(tmp_path / "pets"), num_classes=24, per_class=3, size=32, seed=0)
    seen = []

    def fake_run_one(spec, out, cache, threads, extra):
        seen.append((spec, extra))
        n = steps_of(spec.overrides)
        return {"name": spec.name, "eval_split": "val", "steps": n, "metrics": {"recall@1": 0.5, "map@r": n / 1000},
                "batch": {"classes_per_batch": 8, "images_per_class": 4}, "checkpoint": str(out / "last.safetensors")}
    monkeypatch.setattr(drun, "run_one", fake_run_one)
    rec = B.run_pets37(str(Path(root) / "images"), (60, 120), tmp_path / "w", 1)
    assert rec["settings"]["val_classes"] == 2  # 12 training classes: the auto rule's max(2, 20%)
    assert rec["stages"][0]["chosen"] == "st120" and len(seen) == 2
    for spec, extra in seen:
        ov = spec.overrides
        assert extra == {"validation_only": True}
        assert ov[ov.index("--data.val_classes") + 1] == "2" and ov[ov.index("--opa.enabled") + 1] == "false"
        assert ov[ov.index("--data.root") + 1] == str(Path(root) / "images")


# ----------------------------------------------------------------------------- plan
def test_plan_sittings_and_printout(tmp_path, folder_root, capsys):
    runs = [("mobilenetv2", "cub100", 600.0), ("mobilenetv2", "pets37", 600.0), ("lite2", "cub100", 5000.0),
            ("lite2", "pets37", 3000.0), ("vit_s14", "cub100", None)]
    groups = P.sittings(runs, 7200.0)
    assert groups == [[("mobilenetv2", "cub100"), ("mobilenetv2", "pets37"), ("lite2", "cub100")],
                      [("lite2", "pets37"), ("vit_s14", "cub100")]]
    assert P.sitting_commands(groups[0]) == [
        "python -m benchmarks.defaults.run --presets mobilenetv2 --datasets cub100,pets37",
        "python -m benchmarks.defaults.run --presets lite2 --datasets cub100"]
    assert P.sitting_commands([("a", "x"), ("b", "x")]) == ["python -m benchmarks.defaults.run --presets a,b --datasets x"]
    assert _main(tmp_path, folder_root, "--plan", "--presets", "mobilenetv2", "--datasets", "pets37") == 0
    out = capsys.readouterr().out
    # 6 training classes of 4 images: no hold-out; 24 images -> far under 2 epochs: the auto floor.
    from dva.config import AUTO_STEPS
    assert f"{AUTO_STEPS['min']} steps" in out and "24 train img" in out and "0 val classes" in out
    assert "sitting 1" in out and not (tmp_path / "defaults.json").exists()


def test_the_step_validation_kept_is_shown_and_step_0_is_the_frozen_backbone():
    last = {**_record("mobilenetv2", "cub100", 70.0, 35.0, steps=150), "model_step": 150}
    earlier = {**last, "model_step": 120, "early_stop": "early stop at step 150 of 200"}
    frozen = {**_record("mobilenetv2", "pets37", 60.0, 30.0, steps=96), "model_step": 0}
    on_test = {**last, "model_step": 100, "selection_split": "test"}  # refused by the harness; never "kept"
    assert V.steps_cell(last) == "150 of 200 (auto, floor)"
    assert V.steps_cell(earlier) == "150 of 200 (auto, floor; early stop; kept 120)"
    assert V.steps_cell(frozen) == "96 of 200 (auto, floor; kept 0 = frozen)"
    assert V.kept_step(on_test) is None and V.kept_step({**last, "model_step": None}) is None
    res = {"settings": {"open_set": [], "harness_backbones": {}}, "runs": [last, earlier, frozen]}
    (line,) = [n for n in V.notes(res) if n.startswith("Kept step 0")]
    assert line.endswith("the frozen backbone (zero-initialised adapters): mobilenetv2/pets37.")


def test_refresh_reads_a_tuned_row_that_landed_since(tmp_path):
    results = tmp_path / "datasets"
    res = runner.build_result([_record("mobilenetv2", "cars196", 56.4, 9.7)], {}, [], tmp_path / "d.json", 2, results)
    assert res["runs"][0]["tuned"] is None and res["runs"][0]["compare"]["d_r1_vs_tuned"] is None
    _main_json(results, "cars196", "mobilenetv2", 56.1, 10.5)  # the datasets harness's main profile lands
    new = runner.refresh(res, results)
    assert new["runs"][0]["tuned"]["r1"] == 56.1
    assert new["runs"][0]["compare"]["d_r1_vs_tuned"] == pytest.approx(0.3)
    assert runner.refresh(new, results) == new and {k: v for k, v in new.items() if k != "runs"} == \
        {k: v for k, v in res.items() if k != "runs"}
