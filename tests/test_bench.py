"""The benchmark's formatting helpers (fast: no training, no data)."""
from __future__ import annotations

import json

import pytest

from dva_train import bench


def _run(seed: int, r1: float, params: int = 33152, frac: float = 0.0149) -> dict:
    return {"seed": seed, "metrics": {"recall@1": r1, "recall@2": 0.9, "recall@4": 0.95, "recall@8": 0.97, "map@r": 0.3},
            "params": {"trainable_params": params, "trainable_fraction": frac, "backbone_params": 2223872},
            "train_seconds": 30.0, "train_img_per_s": 200.0, "embed_img_per_s": 50.0, "peak_rss_mb": 1500.0,
            "wall_seconds": 60.0, "eval_split": "test", "img_size": 224}


def test_mean_std():
    assert bench.mean_std([1.0]) == (1.0, 0.0)
    m, s = bench.mean_std([1.0, 2.0, 3.0])
    assert m == pytest.approx(2.0) and s == pytest.approx(1.0)


def test_aggregate_and_table():
    row = bench.aggregate("dva", "main", "DVA", ["--ica.rank", "4"], [_run(0, 0.83), _run(1, 0.84), _run(2, 0.85)])
    assert row["stats"]["recall@1"][0] == pytest.approx(84.0)
    assert row["stats"]["recall@1"][1] == pytest.approx(1.0)
    assert row["trainable_params"] == 33152 and row["trainable_pct"] == pytest.approx(1.49)
    frozen = bench.aggregate("frozen", "main", "frozen backbone", [], [_run(0, 0.80, 0, 0.0)])
    table = bench.format_table([frozen, row])
    lines = table.splitlines()
    assert lines[0] == bench.HEADER
    assert set(lines[1]) == {"|", "-"} and lines[1].count("|") == lines[0].count("|")
    assert all(ln.count("|") == lines[0].count("|") for ln in lines)
    assert "84.0 ± 1.0" in lines[3] and "33,152 (1.49%)" in lines[3]
    assert "| frozen backbone | 0 | 80.0 |" in lines[2]
    json.dumps(row)  # the JSON output must serialise


def test_replace_section_keeps_other_sections():
    doc = "# Benchmarks\n\n## Other engineer\n\ntheir text\n\n## cub100: DVA vs baselines\n\nold\n\n### sub\n\nold too\n\n## Later\n\nkeep\n"
    new = bench.replace_section(doc, bench.SECTION, "new body\n\n### sub\n\nnew too")
    assert "their text" in new and "keep" in new and "## Later" in new
    assert "old" not in new and "new body" in new and "new too" in new
    assert new.index("## Other engineer") < new.index(bench.SECTION) < new.index("## Later")
    created = bench.replace_section("", bench.SECTION, "body")
    assert created.startswith("# Benchmarks\n") and bench.SECTION in created
    appended = bench.replace_section("# Benchmarks\n\n## A\n\na\n", bench.VIT_SECTION, "v")
    assert appended.index("## A") < appended.index(bench.VIT_SECTION)


def test_format_params():
    assert bench.format_params(0, 0.0) == "0"
    assert bench.format_params(1638400, 73.67) == "1,638,400 (73.67%)"


def test_vit_table_format():
    r = {"backbone_params": 85798656, "adapter_params": 589824, "trainable_pct": 0.687, "merged_params": 85798656,
         "ica": {"rank": 16}, "speed": {k: {"1": {"img_per_s": 5.0}, "32": {"img_per_s": 9.0}}
                                       for k in ("frozen", "ica_gelu", "ica_merged_identity")}}
    t = bench.format_vit_table(r).splitlines()
    assert len(t) == 5 and "img/s @ batch 32" in t[0] and "589,824 (0.69%)" in t[3]


def test_missing_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DVA_CUB100", str(tmp_path / "nope"))
    monkeypatch.setattr(bench, "REPO", tmp_path)
    with pytest.raises(FileNotFoundError, match="cub100 not found"):
        bench.find_cub100(str(tmp_path / "also-nope"))


def test_expand_half_budget():
    ov = ["--opa.enabled", "false", bench.HALF, "--train.seed", "0"]
    assert bench.expand_half(ov, 2, 184) == ["--opa.enabled", "false", "--train.max_steps", "92", "--train.seed", "0"]
    assert bench.expand_half(ov, 4, 0)[2:6] == ["--train.epochs", "2", "--train.max_steps", "0"]
    assert bench.expand_half(["--x", "1"], 2, 0) == ["--x", "1"]
    rows = bench.ablation_rows()
    assert bench.HALF in rows["dva_half"][2] and bench.HALF not in rows["dva_beta1"][2]


def test_markdown_reports_load_and_budget():
    row = bench.aggregate("dva", "main", "DVA", [], [dict(_run(0, 0.83), loadavg_1m=[0.4, 2.6])])
    result = {"rows": [row], "command": "python benchmarks/cub100.py", "date": "d", "profile": "full", "json": "x.json",
              "settings": {"img_size": 224, "epochs": 2, "max_steps": 0, "seeds": [0], "threads": 2, "embed_images": 0,
                           "dva_defaults": [], "common": []},
              "machine": {"cpu_count": 2, "cpu_model": "cpu", "ram_gb": 23.5, "torch": "t", "timm": "m"}}
    text = bench.markdown(result)
    assert "load average 0.4-2.6" in text and "**224 px**; 2 epochs" in text
    del row["runs"][0]["loadavg_1m"]
    assert "load not recorded" in bench.markdown(result)


def test_profile_flags():
    p = bench.build_parser()
    assert p.parse_args([]).profile == "quick"
    assert p.parse_args(["--quick"]).profile == "quick"
    assert p.parse_args(["--full"]).profile == "full"
    assert p.parse_args(["--profile", "val"]).profile == "val"


def test_frozen_key_groups_runs_by_size_and_split():
    assert bench.frozen_key(["--backbone.img_size", "160"]) == (160, 0)
    assert bench.frozen_key(["--data.val_classes", "10"])[1] == 10
    assert bench.frozen_key(["--loss.beta", "5"]) == bench.frozen_key([])


def test_vit_overhead_sentence():
    def t(med, runs):
        return {"median_s": med, "runs_s": runs}

    r = {"speed": {"frozen": {"1": t(1.0, [1.0, 1.1]), "32": t(10.0, [10.0, 10.0])},
                   "ica_gelu": {"1": t(1.1, [1.1, 1.1]), "32": t(10.5, [10.5, 10.5])},
                   "ica_merged_identity": {"1": t(1.0, [1.0, 1.0]), "32": t(9.0, [9.0, 12.6])}}}
    s = bench.vit_overhead_sentence(r)
    assert "batch 1: ICA gelu 1.10x, merged 1.00x" in s and "batch 32: ICA gelu 1.05x, merged 0.90x" in s
    assert "was 40%" in s
