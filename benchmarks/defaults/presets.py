"""The presets' adapter settings, chosen on the validation splits of every ID dataset together.

Each ID dataset's select profile (``python -m benchmarks.datasets.run --profile select``) chooses its
own adapter placement/rank, learning rate, step budget and DPT weight on its held-out training
classes, and the three disagree. A preset serves photos of any kind, so it takes, stage by stage,
the candidate with the highest validation MAP@R averaged over the ID datasets (each dataset's
frozen score subtracted, so the table shows gains; the choice is the same either way), ties broken
by the mean R@1 gain, a dear candidate only by the select's own margin. The step budget is not a
preset value: the data-scaled rule (``AUTO_STEPS``, :mod:`benchmarks.defaults.budget`) is fitted to
the same profiles' steps stages.

A stage's candidates were each run at that dataset's earlier choices (the learning-rate stage of
cars196 at its own placement), so a mean is over each dataset's own path, as its select ran it.
Only a backbone whose select profiles are complete on every ID dataset gets a choice; the tests
keep its packaged preset equal to it. From the repository root:

    python -m benchmarks.defaults.presets    # the table per backbone, and what each preset differs in
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from benchmarks import _common as C
from benchmarks.datasets.plan import TABLE
from benchmarks.datasets.select import choose_with_margin

RESULTS = C.RESULTS / "datasets"
# The select stages a preset takes, and which config key each of a stage's own tokens sets (a
# candidate with another token, e.g. the all-stages one's --train.cache_prefix off, is refused as a
# preset value rather than dropped: the preset would not be what validation scored).
STAGE_KEYS: dict[str, dict[str, str]] = {
    "placement": {"--ica.rank": "ica.rank", "--ica.target": "ica.target", "--ica.blocks": "ica.blocks"},
    "lr": {"--train.lr": "train.ica_lr"},
    "beta": {"--loss.beta": "loss.beta"},
}


def load_selects(backbone: str, folder: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """The complete select profiles of ``backbone``, ID dataset -> JSON (absent or unfinished left out)."""
    out = {}
    for d in TABLE.datasets:
        path = folder / f"{d}_{backbone}_select.json"
        if path.is_file():
            res = json.loads(path.read_text())
            if res.get("complete"):
                out[d] = res
    return out


def _value(key: str, token: str) -> Any:
    token = token.strip("'\"")
    if key == "ica.rank":
        return int(token)
    return float(token) if key in ("train.ica_lr", "loss.beta") else token


def stage_values(stage: str, tokens: list[str]) -> dict[str, Any]:
    """The config values of a candidate's own tokens (harness.yaml's, not the run's: a later stage's
    runs also carry the earlier stages' tokens, which are each dataset's own choices).

    Raises:
        ValueError: a token :data:`STAGE_KEYS` does not map (the preset cannot carry it).
    """
    keys = STAGE_KEYS[stage]
    pairs = list(zip(tokens[::2], tokens[1::2]))
    other = [k for k, _ in pairs if k not in keys]
    if other:
        raise ValueError(f"select stage {stage!r}: the chosen candidate also sets {other}, which a preset does not "
                         f"carry ({sorted(keys)}); add them to STAGE_KEYS or choose the preset by hand")
    return {keys[k]: _value(keys[k], v) for k, v in pairs}


def consensus(selects: dict[str, dict[str, Any]], own: dict[str, dict[str, list[str]]] | None = None) -> dict[str, Any]:
    """The choice over the ID datasets' select profiles, stage by stage.

    Args:
        selects: ID dataset -> its complete select JSON (one backbone).
        own: stage -> candidate -> its own tokens (harness.yaml's for the backbone); None: the tokens of
            the first dataset's run of the candidate that :data:`STAGE_KEYS` maps.

    Returns:
        ``{"datasets", "stages": [{name, candidates: [{name, gains, r1_gains, mean_gain, dear}],
        chosen, chosen_by, margin}], "values": {config key: value}}``; ``stages`` covers the stages
        of :data:`STAGE_KEYS` that every profile ran.
    """
    datasets = list(selects)
    if not datasets:
        raise ValueError("consensus: no complete select profile")
    stages, values = [], {}
    for name in STAGE_KEYS:
        per = {d: next((s for s in selects[d]["stages"] if s["name"] == name), None) for d in datasets}
        if any(s is None for s in per.values()):
            continue
        first = per[datasets[0]]
        names = [c["name"] for c in first["candidates"]
                 if all(any(o["name"] == c["name"] for o in per[d]["candidates"]) for d in datasets)]
        cands, scores = [], {}
        for n in names:
            gains, r1 = {}, {}
            for d in datasets:
                c = next(o for o in per[d]["candidates"] if o["name"] == n)
                frozen, m = selects[d]["frozen_val_metrics"], c.get("val_metrics") or {}
                gains[d] = m.get("map@r", math.nan) - frozen["map@r"]
                r1[d] = m.get("recall@1", math.nan) - frozen["recall@1"]
            if any(math.isnan(v) for v in gains.values()):  # not scored on some dataset: no mean to compare
                continue
            mean, mean_r1 = sum(gains.values()) / len(gains), sum(r1.values()) / len(r1)
            scores[n] = (mean, mean_r1)
            dear = any(next(o for o in per[d]["candidates"] if o["name"] == n).get("dear") for d in datasets)
            cands.append({"name": n, "gains": gains, "r1_gains": r1, "mean_gain": mean, "mean_r1_gain": mean_r1,
                          "dear": dear})
        margin = max(float(s.get("dear_margin") or 0.0) for s in per.values())
        chosen, how = choose_with_margin(scores, {c["name"] for c in cands if c["dear"]}, margin)
        if own is not None:
            tokens = own[name][chosen]
        else:
            run = next(c for c in first["candidates"] if c["name"] == chosen)["overrides"]
            tokens = [t for k, v in zip(run[::2], run[1::2]) if k in STAGE_KEYS[name] for t in (k, v)]
        values.update(stage_values(name, tokens))
        stages.append({"name": name, "candidates": cands, "chosen": chosen, "chosen_by": how, "margin": margin})
    return {"datasets": datasets, "stages": stages, "values": values}


def preset_values(preset: str) -> dict[str, Any]:
    """What the packaged ``preset`` trains with for each key of :data:`STAGE_KEYS` (an unset adapter
    rate: the trainable's default)."""
    from dva.config import TRAINABLE_DEFAULTS, load_config

    cfg = load_config(preset)
    lr = cfg.train.lr if "lr" not in cfg.train.defaulted else cfg.train.ica_lr
    return {"ica.rank": cfg.ica.rank, "ica.target": cfg.ica.target, "ica.blocks": cfg.ica.blocks,
            "train.ica_lr": TRAINABLE_DEFAULTS["ica"]["lr"] if lr is None else lr, "loss.beta": cfg.loss.beta}


def differences(preset: str, values: dict[str, Any]) -> list[str]:
    """Each key where the packaged ``preset`` differs from ``values`` (the consensus), one line each."""
    have = preset_values(preset)
    return [f"{preset}: {k} is {have[k]!r}, the validation choice is {v!r}" for k, v in values.items()
            if (not math.isclose(have[k], v) if isinstance(v, float) else have[k] != v)]


def _pts(v: float, digits: int = 1) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:+.{digits}f}"


def render(record: dict[str, Any], preset: str) -> str:
    """The evidence table (validation MAP@R gain over frozen, points, per dataset and mean) and the choice."""
    ds = record["datasets"]
    rows = []
    for st in record["stages"]:
        for c in st["candidates"]:
            mark = " (chosen" + (", by the margin" if st["chosen_by"] == "margin" else "") + ")" \
                if c["name"] == st["chosen"] else ""
            rows.append([st["name"], f"{c['name']}{' [dear]' if c['dear'] else ''}{mark}",
                         *[_pts(c["gains"][d]) for d in ds], _pts(c["mean_gain"], digits=2)])
    table = C.md_table(["stage", "candidate", *ds, "mean"], rows, "ll" + "r" * (len(ds) + 1))
    v = record["values"]
    said = (f"The `{preset}` preset: ICA rank {v['ica.rank']} on `{v['ica.target']}` of blocks "
            f"`{v['ica.blocks']}`, adapter learning rate {v['train.ica_lr']:g} (`train.ica_lr`), DPT weight "
            f"{v['loss.beta']:g}.")
    return (f"Validation MAP@R gain over the frozen backbone (points), {len(ds)} ID datasets' select profiles "
            f"(`python -m benchmarks.defaults.presets`):\n\n{table}\n\n{said}")


def choices(folder: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """preset -> its consensus record, for each harness backbone whose select profiles are complete on
    every ID dataset."""
    out = {}
    for name, bb in TABLE.backbones.items():
        sel = load_selects(name, folder)
        if len(sel) == len(TABLE.datasets):
            out[bb.preset] = consensus(sel, {st.name: st.of(name) for st in TABLE.stages if st.name in STAGE_KEYS})
    return out


def main(argv: list[str] | None = None) -> int:
    """Print each complete backbone's table and its preset's differences (exit 1 when one differs)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.defaults.presets", description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the select profiles' JSON")
    args = ap.parse_args(argv)
    found = choices(args.results)
    diffs = []
    for preset, rec in found.items():
        print(render(rec, preset) + "\n")
        diffs += differences(preset, rec["values"])
    missing = [bb.preset for bb in TABLE.backbones.values() if bb.preset not in found]
    if missing:
        print(f"not chosen yet (select profiles incomplete on some ID dataset): {', '.join(missing)}")
    print("\n".join(diffs) or "every chosen preset matches its validation choice")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
