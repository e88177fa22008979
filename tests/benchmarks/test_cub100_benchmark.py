"""The cub100 benchmark (``python -m benchmarks.cub100.run``): plan, runs, report (fast: no training, no data)."""
from __future__ import annotations

import json

import pytest

from benchmarks import _common as C
from benchmarks.cub100 import plan as planner
from benchmarks.cub100 import render as report
from benchmarks.cub100 import run as runner

# A frozen copy of the row table as it was in dva_train/bench.py (before rows.yaml): a typo in
# rows.yaml - a label, an override, a group, a row's position - fails here.
ALL_ROW_NAMES = [
    "frozen", "head", "full", "ica", "ica_opa", "dva",
    "dva_beta0.1", "dva_beta0.5", "dva_beta1", "dva_beta2", "dva_beta5", "dva_rank4", "dva_rank8", "dva_rank16",
    "dva_rank32", "dva_act_gelu", "dva_act_identity", "dva_box_self", "dva_box_none", "ica_r2all", "ica_half",
    "dva_half", "ica_r16head",
    "ica_cached", "ica_online", "frozen_224", "frozen_160", "dva_160px",
    "val_frozen", "val_head", "val_ica_r4", "val_dva_r4", "val_dva_r4_lr3e-3", "val_dva_r8pw", "val_ica_r2all",
    "val_ica_r4pwall", "val_full",
    "pets_frozen", "pets_head", "pets_full", "pets_ica", "pets_ica_opa", "pets_dva",
    "val_beta0", "val_beta0.5", "val_beta1", "val_beta2", "val_beta5",
    "va_frozen", "va_ica", "va_ica_lr3e-3", "va_ica_r8pw", "va_ica_3st", "va_ica_head",
    "vv_frozen", "vv_ica", "vv_ica_lr3e-3", "vv_ica_6blk", "vv_ica_r8_8blk",
]
FROZEN_ROWS = {
    "frozen": ("main", "frozen backbone", []),
    "head": ("main", "head (linear projection)", ["--train.trainable", "head", "--opa.enabled", "false"]),
    "full": ("main", "full fine-tune", ["--train.trainable", "full", "--opa.enabled", "false", "--train.cache_prefix",
                                        "off", "--train.augment", "none", "--train.lr", "1e-4"]),
    "ica": ("main", "ICA", ["--opa.enabled", "false"]),
    "ica_opa": ("main", "ICA + OPA", ["--loss.beta", "0"]),
    "dva": ("main", "DVA (ICA + OPA + DPT)", []),
    "dva_beta0.5": ("beta", "DVA beta=0.5", ["--loss.beta", "0.5"]),
    "ica_r2all": ("where", "ICA r=2 pw+pwl, all stages (1.52%)",
                  ["--opa.enabled", "false", "--ica.rank", "2", "--ica.blocks", "all", "--train.cache_prefix", "off",
                   "--train.augment", "none"]),
    "ica_half": ("budget", "ICA, half the steps", ["--opa.enabled", "false", "@half"]),
    "dva_half": ("budget", "DVA, half the steps", ["@half"]),
    "ica_online": ("speedup", "ICA, online augmentation (no cache)",
                   ["--opa.enabled", "false", "--train.cache_prefix", "off", "--train.augment", "standard"]),
    "val_frozen": ("val", "frozen backbone", ["--data.val_classes", "10"]),
    "val_head": ("val", "head", ["--data.val_classes", "10", "--train.trainable", "head", "--opa.enabled", "false"]),
    "val_ica_r4": ("val", "ICA r4 pw+pwl -2: (1.49%)", ["--data.val_classes", "10", "--opa.enabled", "false"]),
    "val_dva_r4": ("val", "DVA r4 pw+pwl -2: (1.49%)", ["--data.val_classes", "10"]),
    "val_dva_r4_lr3e-3": ("val", "DVA r4 pw+pwl -2:, lr 3e-3", ["--data.val_classes", "10", "--train.lr", "3e-3"]),
    "val_dva_r8pw": ("val", "DVA r8 pw -2: (1.45%)", ["--data.val_classes", "10", "--ica.rank", "8", "--ica.target",
                                                      "pw"]),
    "val_ica_r2all": ("val", "ICA r2 pw+pwl all stages (1.52%)",
                      ["--data.val_classes", "10", "--opa.enabled", "false", "--ica.rank", "2", "--ica.blocks", "all",
                       "--train.cache_prefix", "off", "--train.augment", "none"]),
    "val_ica_r4pwall": ("val", "ICA r4 pw all stages (1.50%)",
                        ["--data.val_classes", "10", "--opa.enabled", "false", "--ica.target", "pw", "--ica.blocks",
                         "all", "--train.cache_prefix", "off", "--train.augment", "none"]),
    "val_full": ("val", "full fine-tune", ["--data.val_classes", "10", "--train.trainable", "full", "--opa.enabled",
                                           "false", "--train.cache_prefix", "off", "--train.augment", "none",
                                           "--train.lr", "1e-4"]),
}


def _run(seed: int, r1: float, params: int = 33152, frac: float = 0.0149) -> dict:
    return {"seed": seed, "metrics": {"recall@1": r1, "recall@2": 0.9, "recall@4": 0.95, "recall@8": 0.97, "map@r": 0.3},
            "params": {"trainable_params": params, "trainable_fraction": frac, "backbone_params": 2223872},
            "train_seconds": 30.0, "train_img_per_s": 200.0, "embed_img_per_s": 50.0, "peak_rss_mb": 1500.0,
            "wall_seconds": 60.0, "eval_split": "test", "img_size": 224}


# ----------------------------------------------------------------------------- rows.yaml
def test_rows_yaml_matches_the_frozen_table():
    rows = planner.ROWS.all_rows()
    assert list(rows) == ALL_ROW_NAMES
    for name, want in FROZEN_ROWS.items():
        assert tuple(rows[name]) == want, name
    assert list(planner.ROWS.sets) == ["main", "ablations", "speedup", "val", "pets37", "beta_val", "val_adapters", "val_adapters_vit"]
    # Adapter candidates for other backbones: ICA only (OPA off in the set's prefix), on the validation split.
    assert tuple(rows["va_ica_3st"]) == ("val", "ICA r4 pw+pwl, last three stages",
                                         ["--data.val_classes", "10", "--opa.enabled", "false", "--ica.blocks", "'-3:'"])
    # The beta study on the validation split: beta = 1 is the val DVA row itself (one run folder).
    assert tuple(rows["val_beta1"]) == ("beta_val", "DVA beta=1", ["--data.val_classes", "10"])
    assert tuple(rows["val_beta0"]) == ("beta_val", "DVA beta=0 (ICA + OPA)",
                                        ["--data.val_classes", "10", "--loss.beta", "0"])
    assert list(planner.ROWS.sets["main"]) == ALL_ROW_NAMES[:6]


def test_rows_yaml_defaults_aliases_order_profiles():
    t = planner.ROWS
    assert t.dva_defaults == ["--ica.rank", "4", "--ica.target", "pw+pwl", "--ica.blocks", "'-2:'"]
    assert t.half == "@half"
    assert t.aliases == {"ica_cached": "ica", "dva_beta1": "dva", "dva_rank4": "dva", "dva_act_gelu": "dva",
                         "dva_box_self": "dva", "val_beta1": "val_dva_r4"}
    assert t.run_order == ["ica", "dva", "ica_opa", "head", "full", "frozen"]
    assert t.profiles == {"quick": ["main"], "full": ["main", "ablations", "speedup"], "val": ["val"],
                          "ablations": ["ablations"], "speedup": ["speedup"], "pets37": ["pets37"],
                          "beta_val": ["beta_val"], "val_adapters": ["val_adapters"],
                          "val_adapters_vit": ["val_adapters_vit"]}


def _yaml(tmp_path, sets: str, extra: str = "") -> str:
    text = ('dva_defaults: []\nhalf_marker: "@half"\nrun_order: []\nprofiles: {quick: [main]}\n' + extra
            + "sets:\n  main:\n    group: main\n    rows:\n" + sets)
    p = tmp_path / "rows.yaml"
    p.write_text(text)
    return str(p)


def test_rows_yaml_mistakes_are_refused(tmp_path):
    ok = '      a: {label: "A", overrides: ["--opa.enabled", "false"]}\n'
    assert planner.load_rows(_yaml(tmp_path, ok)).all_rows()["a"] == ("main", "A", ["--opa.enabled", "false"])
    with pytest.raises(TypeError, match="quoted strings"):  # a bare false is a bool
        planner.load_rows(_yaml(tmp_path, '      a: {label: "A", overrides: ["--opa.enabled", false]}\n'))
    with pytest.raises(ValueError, match="duplicate key 'a'"):
        planner.load_rows(_yaml(tmp_path, ok + ok))
    with pytest.raises(ValueError, match="unknown key"):
        planner.load_rows(_yaml(tmp_path, '      a: {label: "A", overides: []}\n'))
    with pytest.raises(ValueError, match="alias target nope"):
        planner.load_rows(_yaml(tmp_path, ok, "aliases: {a: nope}\n"))


# ----------------------------------------------------------------------------- planning
def test_expand_half_budget():
    ov = ["--opa.enabled", "false", planner.ROWS.half, "--train.seed", "0"]
    assert planner.expand_half(ov, 2, 184) == ["--opa.enabled", "false", "--train.max_steps", "92", "--train.seed", "0"]
    assert planner.expand_half(ov, 4, 0)[2:6] == ["--train.epochs", "2", "--train.max_steps", "0"]
    assert planner.expand_half(["--x", "1"], 2, 0) == ["--x", "1"]
    rows = planner.ROWS.all_rows()
    assert planner.ROWS.half in rows["dva_half"].overrides and planner.ROWS.half not in rows["dva_beta1"].overrides


def test_frozen_key_groups_runs_by_size_and_split():
    assert planner.frozen_key(["--backbone.img_size", "160"]) == (160, 0, "cub100")
    assert planner.frozen_key(["--data.dataset", "folder"]) != planner.frozen_key([])  # pets37 rows: their own
    assert planner.frozen_key(["--data.val_classes", "10"])[1] == 10
    assert planner.frozen_key(["--loss.beta", "5"]) == planner.frozen_key([])


def test_build_plan_order_and_seeds():
    plan = planner.build_plan(planner.ROWS, "quick", None, [0, 1, 2], False)
    assert [(n, s) for n, _, s in plan] == [("ica", [0, 1, 2]), ("dva", [0, 1, 2]), ("ica_opa", [0, 1, 2]),
                                           ("head", [0, 1, 2]), ("full", [0, 1, 2]), ("frozen", [0])]
    full = planner.build_plan(planner.ROWS, "full", None, [3, 4], False)
    assert len(full) == 28 and {n: s for n, _, s in full}["dva_beta2"] == [3]
    assert {n: s for n, _, s in full}["frozen"] == [0]
    picked = planner.build_plan(planner.ROWS, "quick", ["val_head", "dva", "frozen_160"], [1, 2], True)
    assert [(n, s) for n, _, s in picked] == [("dva", [1, 2]), ("val_head", [1, 2]), ("frozen_160", [1])]
    with pytest.raises(ValueError, match="unknown row"):
        planner.build_plan(planner.ROWS, "quick", ["dva", "dva_typo"], [0], False)


def test_expand_plan_overrides_and_folders():
    plan = planner.build_plan(planner.ROWS, "quick", ["dva", "head", "frozen", "ica_half"], [0], False)
    common = ["--train.epochs", "2"]
    runs = {name: (row, specs)
            for name, row, specs in planner.expand_plan(planner.ROWS, plan, common, 224, 2, 184, 512)}
    d = planner.ROWS.dva_defaults
    row, (spec,) = runs["dva"]
    assert row.overrides == d and spec.kind == "train" and spec.tag == "dva_s0_224px_184st"
    assert spec.overrides == common + d + ["--train.seed", "0"] and spec.embed_images == 512  # first: measures frozen
    row, (spec,) = runs["head"]  # no adapters: no ICA defaults; frozen metrics already measured by dva
    assert row.overrides == FROZEN_ROWS["head"][2]
    assert spec.overrides == common + FROZEN_ROWS["head"][2] + ["--train.seed", "0", "--train.eval_frozen", "false"]
    row, (spec,) = runs["ica_half"]
    assert row.overrides == d + ["--opa.enabled", "false", "--train.max_steps", "92"]
    row, (spec,) = runs["frozen"]
    assert spec.kind == "frozen" and row.overrides == [] and spec.overrides == common + ["--train.seed", "0"]


# ----------------------------------------------------------------------------- formatting
def test_aggregate_and_table():
    row = runner.aggregate("dva", "main", "DVA", ["--ica.rank", "4"], [_run(0, 0.83), _run(1, 0.84), _run(2, 0.85)])
    assert row["stats"]["recall@1"][0] == pytest.approx(84.0)
    assert row["stats"]["recall@1"][1] == pytest.approx(1.0)
    assert row["trainable_params"] == 33152 and row["trainable_pct"] == pytest.approx(1.49)
    frozen = runner.aggregate("frozen", "main", "frozen backbone", [], [_run(0, 0.80, 0, 0.0)])
    table = report.format_table([frozen, row])
    lines = table.splitlines()
    assert lines[0] == report.HEADER == ("| row | trainable params (% of backbone) | R@1 | R@2 | R@4 | R@8 | MAP@R "
                                        "| train s | train img/s | row wall s | embed img/s | peak RSS MB | seeds |")
    assert set(lines[1]) == {"|", "-"} and lines[1].count("|") == lines[0].count("|")
    assert all(ln.count("|") == lines[0].count("|") for ln in lines)
    assert "84.0 ± 1.0" in lines[3] and "33,152 (1.49%)" in lines[3]
    assert "| frozen backbone | 0 | 80.0 |" in lines[2]
    json.dumps(row)  # the JSON output must serialise


def test_ood_columns_and_change_against_frozen():
    def with_ood(run: dict, r1: float) -> dict:
        return {**run, "ood_metrics": {**run["metrics"], "recall@1": r1, "map@r": 0.2}}

    frozen = runner.aggregate("frozen", "main", "frozen backbone", [], [with_ood(_run(0, 0.80, 0, 0.0), 0.60)])
    dva = runner.aggregate("dva", "main", "DVA", [], [with_ood(_run(0, 0.83), 0.58), with_ood(_run(1, 0.84), 0.56)])
    full = runner.aggregate("full", "main", "full", [], [_run(0, 0.85)])  # no OOD run: "-", not 0
    assert dva["stats"]["ood_recall@1"] == pytest.approx((57.0, 2 ** 0.5))
    assert full["stats"]["ood_recall@1"] is None
    lines = report.format_table([frozen, dva, full]).splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[7:13] == list(report.OOD_COLUMNS) and head[13] == "train s"
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    assert all(len(c) == len(head) for c in cells)
    assert cells[0][7] == "60.0" and cells[0][12] == "-"  # the frozen row: no change against itself
    assert cells[1][7] == "57.0 ± 1.4" and cells[1][12] == "-3.0"
    assert cells[2][7] == "-" and cells[2][12] == "-"
    assert "OOD" not in report.format_table([full])  # no OOD anywhere: the table as before


def test_format_params():
    assert report.format_params(0, 0.0) == "0"
    assert report.format_params(1638400, 73.67) == "1,638,400 (73.67%)"


def test_markdown_reports_load_budget_and_current_command():
    row = runner.aggregate("dva", "main", "DVA", [], [dict(_run(0, 0.83), loadavg_1m=[0.4, 2.6])])
    result = {"rows": [row], "command": "python benchmarks/cub100.py --full", "date": "d", "profile": "full",
              "json": "x.json",
              "settings": {"img_size": 224, "epochs": 2, "max_steps": 0, "seeds": [0], "threads": 2, "embed_images": 0,
                           "dva_defaults": [], "common": []},
              "machine": {"cpu_count": 2, "cpu_model": "cpu", "ram_gb": 23.5, "torch": "t", "timm": "m"}}
    text = report.markdown(result)
    assert "load average 0.4-2.6" in text and "**224 px**; 2 epochs" in text
    assert "- `python -m benchmarks.cub100.run --full` (full, d) -> `x.json`" in text  # recorded before the move
    del row["runs"][0]["loadavg_1m"]
    assert "load not recorded" in report.markdown(result)


def test_render_committed_results(tmp_path):
    doc = tmp_path / "B.md"
    doc.write_text("# Benchmarks\n\n## Before\n\nkeep\n")
    files = [C.RESULTS / f for f in ("cub100_full.json", "cub100_val224.json")]
    merged = report.render([json.loads(f.read_text()) for f in files], doc, None)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\n## Before\n\nkeep\n\n" + report.SECTION)
    assert "python -m benchmarks.cub100.run --profile full" in text and "benchmarks/cub100" not in text
    assert "### Validation split" in text and "| DVA (ICA + OPA + DPT) | 33,152 (1.49%) |" in text
    assert [r["name"] for r in merged["rows"]][:6] == ALL_ROW_NAMES[:6]


def test_profile_flags():
    p = runner.build_parser()
    assert p.parse_args([]).profile == "quick"
    assert p.parse_args(["--quick"]).profile == "quick"
    assert p.parse_args(["--full"]).profile == "full"
    assert p.parse_args(["--profile", "val"]).profile == "val"
    with pytest.raises(SystemExit):
        p.parse_args(["--profile", "nope"])


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DVA_CUB100", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="cub100 not found"):
        runner.main(["--root", str(tmp_path / "also-nope"), "--work-dir", str(tmp_path / "work"), "--no-doc"])
    assert not (tmp_path / "work").exists()  # nothing started


def test_backbones_stay_under_the_budget_and_match_the_defaults():
    from dva.bundled import SOURCES
    from dva.config import load_config
    from dva.model import build_model, count_parameters

    assert planner.ROWS.backbones["mobilenetv2"].dva_defaults == planner.ROWS.dva_defaults
    assert planner.ROWS.backbones["mobilenetv2"].model == load_config("demo").backbone.name
    shares = {}
    for key, b in planner.ROWS.backbones.items():
        cfg = load_config("demo", ["--backbone.name", b.model, "--backbone.weights", "none",
                                   "--backbone.img_size", str(b.img_size), *b.dva_defaults])
        p = count_parameters(build_model(cfg, 0))
        shares[key] = 100 * p["trainable_fraction"]
        assert p["adapter_params"] > 0 and shares[key] < 2.0, (key, p)
        assert b.model in SOURCES  # offline weights exist for it
        if "vit" in b.model:
            assert b.img_size % 14 == 0 and "qk" in b.dva_defaults  # the paper's Q/K placement
    assert round(shares["mobilenetv2"], 2) == 1.49 and round(shares["vit_s14"], 3) == 0.456
    assert round(shares["lite2"], 2) == 1.89  # both chosen on the validation split (val_adapters*)
    vit = planner.ROWS.backbones["vit_s14"].dva_defaults
    assert vit == ["--ica.rank", "8", "--ica.target", "qk", "--ica.blocks", "'-8:'"]


def test_pets37_rows_get_the_data_folder_and_no_cub100_metrics():
    plan = planner.build_plan(planner.ROWS, "pets37", None, [0, 1], False)
    assert sorted(n for n, _, _ in plan) == sorted(n for n in planner.ROWS.sets["pets37"])
    assert all(s == [0] for _, _, s in plan)  # not the main group: one seed, labelled so
    with pytest.raises(ValueError, match="needs @pets37"):
        planner.expand_plan(planner.ROWS, plan, [], 224, 2, 0, 512)
    runs = {n: specs for n, _, specs in planner.expand_plan(planner.ROWS, plan, ["--data.root", "CUB"], 224, 2, 0, 512,
                                                          {"@pets37": "/data/pets37/images"})}
    (dva,) = runs["pets_dva"]
    ov = dva.overrides
    assert ov[ov.index("--data.root", 2) + 1] == "/data/pets37/images" and "@pets37" not in ov
    assert ov[ov.index("--opa.box_source") + 1] == "yolox" and ov[ov.index("--train.epochs") + 1] == "30"
    # the cub100 frozen metrics never stand in for pets37's (and back)
    done = [("frozen", "main", "f", [], [{"name": "f", "img_size": 224, "eval_split": "test", "dataset": "cub100",
                                           "metrics": {"recall@1": 0.8}, "frozen_metrics": {"recall@1": 0.8}}]),
            ("pets_frozen", "pets37", "f", [], [{"name": "p", "img_size": 224, "eval_split": "test",
                                                 "dataset": "folder", "metrics": None}])]
    with pytest.raises(RuntimeError, match="no trained run"):
        runner.fill_frozen_metrics(done)


# ----------------------------------------------------------------------------- --reuse
def _result(model="tf_efficientnet_lite2", img=260, rows=None) -> dict:
    return {"json": "benchmarks/results/old.json",
            "settings": {"model": model, "img_size": img, "epochs": 2, "max_steps": 0},
            "rows": rows if rows is not None else
            [{"name": "ica", "overrides": ["--opa.enabled", "false"], "runs": [_run(0, 0.85), _run(1, 0.86)]}]}


def test_reuse_runs_keys_by_row_and_seed_and_refuses_other_settings():
    want = {"model": "tf_efficientnet_lite2", "img_size": 260, "epochs": 2, "max_steps": 0}
    got = planner.reuse_runs([_result()], want)
    assert sorted(got) == [("ica", 0), ("ica", 1)]
    assert got[("ica", 1)]["run"]["metrics"]["recall@1"] == 0.86
    assert got[("ica", 0)]["overrides"] == ["--opa.enabled", "false"]
    with pytest.raises(ValueError, match="settings"):
        planner.reuse_runs([_result(img=224)], want)
    with pytest.raises(ValueError, match="settings"):  # an older file without "model" is the MobileNetV2's
        planner.reuse_runs([{**_result(), "settings": {"img_size": 260, "epochs": 2, "max_steps": 0}}], want)
    assert planner.reuse_runs([], want) == {}


def test_beta_figure_reads_beta_from_the_overrides():
    from benchmarks.cub100 import beta_figure

    def row(name, group, ov, r1, params=33152):
        return {"name": name, "group": group, "overrides": ov, "trainable_params": params, "seeds": [0],
                "runs": [_run(0, r1)], "stats": {"recall@1": (100 * r1, 0.0), "map@r": (30.0, 0.0)}}

    res = {"rows": [row("frozen", "main", [], 0.79, params=0), row("ica", "main", ["--opa.enabled", "false"], 0.82),
                    row("ica_opa", "main", ["--loss.beta", "0"], 0.821), row("dva", "main", [], 0.828),
                    row("dva_beta2", "beta", ["--loss.beta", "2"], 0.833)]}
    got = beta_figure.test_curve(res)
    assert list(got) == [0.0, 1.0, 2.0]  # frozen and ICA (no object view) are not points of the curve
    assert got[1.0]["r1"] == pytest.approx(82.8) and got[0.0]["r1"] == pytest.approx(82.1)
    val = beta_figure.curve({"rows": [{**row("val_beta5", "beta_val", ["--loss.beta", "5"], 0.9)}]}, ("beta_val",))
    assert list(val) == [5.0] and val[5.0]["r1"] == pytest.approx(90.0)


def test_summary_table_has_deltas_against_frozen_and_marks_missing_rows():
    from benchmarks.cub100 import summary

    def row(name, r1, params=33152, ood=0.8):
        run = {**_run(0, r1, params), "ood_metrics": {k: ood for k in report.METRICS}}
        run["params"]["proxy_params"] = 64000
        return runner.aggregate(name, "main", name, [], [run])

    res = {"settings": {"model": "mobilenetv2_100", "img_size": 224},
           "rows": [row("frozen", 0.79, 0, 0.81), row("full", 0.85, 2223872, 0.76), row("dva", 0.83, 33152, 0.80)]}
    text = summary.table([res])
    lines = {ln.split(" | ")[1]: ln for ln in text.splitlines()[2:]}
    assert "+4.0" in lines["DVA"] and "-1.0" in lines["DVA"] and "64,000" in lines["DVA"]
    assert "+6.0" in lines["full fine-tune"] and "-5.0" in lines["full fine-tune"]
    assert "not run" in lines["ICA"] and "not run" in lines["head"]



def test_summary_pets37_table_maps_pets_rows_and_gives_both_deltas():
    from benchmarks.cub100 import summary

    def row(name, r1, params=33152):
        return runner.aggregate(name, "pets37", name, [], [_run(0, r1, params)])

    res = {"settings": {"model": "tf_efficientnet_lite2", "img_size": 260},
           "rows": [row("pets_frozen", 0.95, 0), row("pets_dva", 0.93), row("pets_ica", 0.96),
                    row("pets_full", 0.19, 4811072)]}
    res["rows"][-1]["runs"][0].update(status="stopped", collapse={"kind": "embeddings", "step": 10})
    assert set(summary.rows_of(res)) == {"frozen", "dva", "ica", "full"}
    lines = {ln.split(" | ")[1]: ln for ln in summary.pets_table([res]).splitlines()[2:]}
    # _run gives every row MAP@R 0.3: no MAP@R change.
    assert "-2.0 / +0.0" in lines["DVA"] and "+1.0 / +0.0" in lines["ICA"]
    assert "not run" in lines["ICA + OPA"] and lines["frozen"].count(" - ") >= 1
    assert "full fine-tune (collapsed: guard stop at step 10)" in lines  # a stopped run says so


def test_summary_names_pets37_adapter_settings_that_differ_from_the_cub100_rows():
    from benchmarks.cub100 import summary

    def res(model, ica, name="dva"):
        ov = ["--ica.rank", ica, "--ica.blocks", "'-8:'", "--opa.enabled", "true"]
        return {"settings": {"model": model, "img_size": 126},
                "rows": [{"name": name, "group": "pets37" if name.startswith("pets_") else "main", "overrides": ov}]}

    cub = [res("vit_small_patch14_dinov2", "8"), res("mobilenetv2_100", "4")]
    assert summary.adapter_settings(cub[0]) == "--ica.rank 8 --ica.blocks '-8:'"  # --ica.* pairs only
    same = summary.settings_note(cub, [res("vit_small_patch14_dinov2", "8", "pets_dva")])
    assert same == "each backbone's adapter settings as in its cub100 rows"
    other = summary.settings_note(cub, [res("mobilenetv2_100", "4", "pets_dva"),
                                        res("vit_small_patch14_dinov2", "16", "pets_dva")])
    assert "DINOv2 ViT-S/14" in other and "--ica.rank 16" in other and "(cub100: `--ica.rank 8" in other
    assert "MobileNetV2" not in other

@pytest.mark.parametrize("n, runtime", [(4, "onnxruntime"), (-1, "torch")])
def test_worker_times_the_embedding_in_dva_embeds_runtime_and_scores_through_torch(tmp_path, synthetic_root, n, runtime):
    pytest.importorskip("onnxruntime")
    spec = {"name": "frozen", "kind": "frozen", "out": str(tmp_path / "run"), "threads": 1, "embed_images": n,
            "overrides": ["--data.dataset", "synthetic", "--data.root", str(synthetic_root),
                          "--backbone.img_size", "64"]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert runner._worker(str(tmp_path / "spec.json")) == 0
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    # Speed only (n > 0): the first n images through onnxruntime; the whole split (n < 0): torch, with metrics.
    assert res["embed_runtime"] == runtime
    assert res["embed_images"] == (4 if n > 0 else 64)  # synthetic: 8 test classes x 8 images
    assert (res["metrics"] is None) == (n > 0)
    assert not (tmp_path / "run" / "model.onnx").exists()  # the per-row export is not kept


def test_run_one_refuses_a_folder_of_other_settings(tmp_path):
    out = tmp_path / "lite2_ica_s0_260px_2ep"
    out.mkdir()
    old = ["--ica.blocks", "'-2:'", "--train.seed", "0"]
    (out / "spec.json").write_text(json.dumps({"overrides": old + ["--train.eval_frozen", "false"]}))
    (out / "result.json").write_text(json.dumps({"name": "ica", "peak_rss_mb": 1.0}))
    # Same settings (who measures the frozen baseline aside): the finished run is reused.
    assert runner.run_one("ica", "train", old, out, tmp_path, 1, 0, log=lambda *a, **k: None)["name"] == "ica"
    with pytest.raises(RuntimeError, match="other settings.*another --work-dir"):
        runner.run_one("ica", "train", ["--ica.blocks", "'-3:'", "--train.seed", "0"], out, tmp_path, 1, 0)


def test_embed_column_names_its_runtime_per_source():
    rows = [{"runs": [{"embed_images": 512, "embed_runtime": "onnxruntime"}]},
            {"runs": [{"embed_images": 512}, {"embed_images": 0, "embed_runtime": "onnxruntime"}]}]
    assert report._runtimes(rows) == 2  # one row timed by onnxruntime, one (read back) by torch
    assert report._runtimes(rows[:1]) == 1 and report._runtimes(rows[1:]) == 0
