"""The presets' adapter settings chosen over every ID dataset's select profile (benchmarks/defaults/presets.py)."""
from __future__ import annotations

import json

import pytest

from benchmarks.datasets.plan import TABLE
from benchmarks.defaults import docs as D
from benchmarks.defaults import plan as P
from benchmarks.defaults import presets as PR


def _cand(name: str, overrides: list[str], mapr: float, r1: float = 0.5, dear: bool = False) -> dict:
    return {"name": name, "overrides": overrides, "val_metrics": {"map@r": mapr, "recall@1": r1}, "dear": dear}


def _select(frozen: float, placement: dict[str, float], lr: dict[str, float], margin: float = 0.005) -> dict:
    """A complete select JSON of two stages: placement (r4_2st, r4_3st, r2_all dear) and lr."""
    blocks = {"r4_2st": ("4", "'-2:'"), "r4_3st": ("4", "'-3:'"), "r2_all": ("2", "all")}
    pl = [_cand(n, ["--ica.rank", blocks[n][0], "--ica.target", "pw+pwl", "--ica.blocks", blocks[n][1],
                    "--train.lr", "1e-3"], v, dear=n == "r2_all") for n, v in placement.items()]
    # The lr stage's candidates also carry the dataset's own placement: only --train.lr is the stage's.
    lrs = [_cand(n, ["--ica.rank", "8", "--ica.blocks", "'-2:'", "--train.lr", n[2:]], v) for n, v in lr.items()]
    return {"complete": True, "frozen_val_metrics": {"map@r": frozen, "recall@1": 0.5},
            "stages": [{"name": "placement", "dear_margin": margin, "candidates": pl},
                       {"name": "lr", "dear_margin": margin, "candidates": lrs}]}


def test_the_choice_is_the_best_mean_gain_over_the_datasets():
    # r4_2st wins on one dataset by a little, r4_3st on the other by a lot: the mean picks r4_3st;
    # a dataset's frozen score does not weigh (the gains are what is averaged).
    sel = {"a": _select(0.50, {"r4_2st": 0.56, "r4_3st": 0.55}, {"lr1e-3": 0.55, "lr3e-3": 0.54}),
           "b": _select(0.10, {"r4_2st": 0.12, "r4_3st": 0.16}, {"lr1e-3": 0.16, "lr3e-3": 0.19})}
    rec = PR.consensus(sel)
    assert [s["chosen"] for s in rec["stages"]] == ["r4_3st", "lr3e-3"]
    pl = rec["stages"][0]["candidates"]
    assert pl[1]["gains"] == pytest.approx({"a": 0.05, "b": 0.06}) and pl[1]["mean_gain"] == pytest.approx(0.055)
    # The values: the placement stage's ICA keys, the lr stage's rate only (not its rank 8 / -2:).
    assert rec["values"] == {"ica.rank": 4, "ica.target": "pw+pwl", "ica.blocks": "-3:", "train.ica_lr": 3e-3}


def test_a_dear_candidate_needs_the_margin_on_the_mean():
    lr = {"lr1e-3": 0.2}
    near = {"a": _select(0.1, {"r4_3st": 0.200, "r2_all": 0.204}, lr), "b": _select(0.1, {"r4_3st": 0.2, "r2_all": 0.2}, lr)}
    st = PR.consensus(near)["stages"][0]
    assert (st["chosen"], st["chosen_by"]) == ("r4_3st", "margin")  # mean lead 0.002 < 0.005
    far = {"a": _select(0.1, {"r4_3st": 0.2, "r2_all": 0.22}, lr), "b": _select(0.1, {"r4_3st": 0.2, "r2_all": 0.2}, lr)}
    st = PR.consensus(far)["stages"][0]
    assert (st["chosen"], st["chosen_by"]) == ("r2_all", "best")  # mean lead 0.01
    assert PR.consensus(far)["values"]["ica.blocks"] == "all"


def test_only_complete_profiles_of_every_id_dataset_choose(tmp_path):
    sel = _select(0.1, {"r4_3st": 0.2}, {"lr1e-3": 0.2})
    for d in list(TABLE.datasets)[:-1]:
        (tmp_path / f"{d}_mobilenetv2_select.json").write_text(json.dumps(sel))
    assert PR.choices(tmp_path) == {}  # one ID dataset missing
    last = list(TABLE.datasets)[-1]
    (tmp_path / f"{last}_mobilenetv2_select.json").write_text(json.dumps({**sel, "complete": False}))
    assert PR.choices(tmp_path) == {}  # one unfinished
    (tmp_path / f"{last}_mobilenetv2_select.json").write_text(json.dumps(sel))
    assert list(PR.choices(tmp_path)) == ["mobilenetv2"]
    assert "no preset" in D.preset_body({}).lower()


def test_differences_name_each_key_that_moved(monkeypatch):
    have = PR.preset_values("mobilenetv2")
    assert PR.differences("mobilenetv2", dict(have)) == []
    moved = {**have, "ica.blocks": "all", "train.ica_lr": have["train.ica_lr"] * 3}
    out = PR.differences("mobilenetv2", moved)
    assert len(out) == 2 and "ica.blocks is" in out[0] and "the validation choice is 'all'" in out[0]
    assert PR.differences("mobilenetv2", {**have, "train.ica_lr": have["train.ica_lr"] + 1e-12}) == []


def test_the_packaged_presets_are_the_choice_of_the_committed_select_profiles():
    """Every preset whose backbone has complete select profiles on all ID datasets trains with the
    values they chose together; a changed preset or new evidence fails here until they agree."""
    found = PR.choices()
    assert "mobilenetv2" in found  # the committed MobileNetV2 profiles are complete on all three
    for preset, rec in found.items():
        assert PR.differences(preset, rec["values"]) == [], f"run python -m benchmarks.defaults.presets ({preset})"
    assert PR.main([]) == 0


def test_a_run_made_with_an_earlier_preset_is_marked(tmp_path):
    now = P.current_digest("mobilenetv2", "cub100")
    assert now == P.digest(P.run_settings(P.default_argv("mobilenetv2", "cub100", "/other", "X", 2, "/c")))
    run = {"preset": "mobilenetv2", "dataset": "cub100", "settings_digest": now}
    assert P.is_current(run) and not P.is_current({**run, "settings_digest": "00000000"})


def test_keys_added_at_their_unused_value_do_not_rename_runs():
    """A config key added later (UNUSED_AT) is left out of a run's settings at its default: adding it
    did not change the digest of presets that do not set it; a preset that sets it has it."""
    from dva.config import DVAConfig

    cfg = DVAConfig().to_dict()
    for key, off in P.UNUSED_AT.items():
        section, name = key.split(".")
        assert cfg[section][name] == off  # the value left out is the key's default
    lite2 = P.run_settings(P.default_argv("lite2", "cub100", "R", "RUN", 1, "C"))["config"]
    assert "ica_lr" not in lite2["train"] and "w_anchor" not in lite2["loss"]
    mnv2 = P.run_settings(P.default_argv("mobilenetv2", "cub100", "R", "RUN", 1, "C"))["config"]
    assert mnv2["train"]["ica_lr"] == PR.preset_values("mobilenetv2")["train.ica_lr"] and "w_anchor" not in mnv2["loss"]
    anchored = P.run_settings(P.default_argv("lite2", "cub100", "R", "RUN", 1, "C"))
    anchored["config"]["loss"]["w_anchor"] = 1.0  # a run that uses the key is another run
    assert P.digest(anchored) != P.current_digest("lite2", "cub100")


def test_a_token_the_preset_cannot_carry_is_refused_and_unscored_candidates_are_skipped():
    lr = {"lr1e-3": 0.2}
    far = {"a": _select(0.1, {"r4_3st": 0.2, "r2_all": 0.22}, lr), "b": _select(0.1, {"r4_3st": 0.2, "r2_all": 0.2}, lr)}
    own = {"placement": {"r4_3st": ["--ica.rank", "4", "--ica.blocks", "'-3:'"],
                         "r2_all": ["--ica.rank", "2", "--ica.blocks", "all", "--train.cache_prefix", "off"]},
           "lr": {"lr1e-3": ["--train.lr", "1e-3"]}}
    with pytest.raises(ValueError, match=r"also sets \['--train.cache_prefix'\], which a preset does not carry"):
        PR.consensus(far, own)
    # The harness's own tokens are what the values come from (not the runs', which carry other stages').
    near = {"a": _select(0.1, {"r4_3st": 0.2, "r2_all": 0.2}, lr), "b": _select(0.1, {"r4_3st": 0.2, "r2_all": 0.2}, lr)}
    assert PR.consensus(near, own)["values"] == {"ica.rank": 4, "ica.blocks": "-3:", "train.ica_lr": 1e-3}
    # A candidate without a validation score on one dataset takes no part (no mean to compare).
    del near["b"]["stages"][0]["candidates"][0]["val_metrics"]
    own["placement"]["r2_all"] = ["--ica.rank", "2", "--ica.blocks", "all"]
    st = PR.consensus(near, own)["stages"][0]
    assert [c["name"] for c in st["candidates"]] == ["r2_all"] and st["chosen"] == "r2_all"


def test_the_packaged_help_figures_are_the_current_runs_only():
    now = P.current_digest("mobilenetv2", "cub100")
    runs = [{"preset": "mobilenetv2", "dataset": "cub100", "settings_digest": now,
             "test_frozen": {"recall@1": 0.7912}, "test_trained": {"recall@1": 0.8584}},
            {"preset": "mobilenetv2", "dataset": "cars196", "settings_digest": "00000000",
             "test_frozen": {"recall@1": 0.446}, "test_trained": {"recall@1": 0.507}}]
    assert json.loads(D.figures_text({"runs": runs})) == {"mobilenetv2": {"cub100": [79.1, 85.8]}}
    assert json.loads(D.figures_text(None)) == {}
