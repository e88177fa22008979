"""The defaults benchmark's markdown section, every number and verdict computed from the result JSON.

:func:`render_section` — the preset x dataset table (budget and its source, hold-out, frozen and
default test R@1/MAP@R, change against frozen, the tuned DVA row and the difference, train
minutes), then the issue's three targets in words, each computed (:func:`targets`).
"""
from __future__ import annotations

from typing import Any

from benchmarks import _common as C
from benchmarks.defaults import plan as P

TARGET_R1_GAP = 1.0  # issue 25: the default command within this many R@1 points of the tuned DVA row


def num(v: float | None, digits: int = 1, signed: bool = False) -> str:
    """A number for a cell; ``-`` for none."""
    if v is None:
        return "-"
    if round(v, digits) == 0:
        return f"{0.0:.{digits}f}"  # neither "-0.0" nor "+0.0": a change that rounds to nothing has no sign
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def pair(a: float | None, b: float | None, signed: bool = False) -> str:
    """``a / b`` (R@1 / MAP@R)."""
    return f"{num(a, signed=signed)} / {num(b, signed=signed)}"


def steps_cell(run: dict[str, Any]) -> str:
    """``trained of budget (source)``: e.g. ``200 (auto, floor)``, ``120 of 200 (auto; early stop; kept 80)``.

    ``kept N``: the step of the model validation chose, where it is not the last (step 0: the frozen backbone).
    """
    src = run.get("budget_source") or "?"
    src += {"min": ", floor", "max": ", cap"}.get(run.get("budget_bound") or "", "")
    steps, budget = run.get("steps"), run.get("budget_steps")
    head = f"{steps}" if steps == budget or budget is None else f"{steps} of {budget}"
    kept = kept_step(run)
    return (f"{head} ({src}{'; early stop' if run.get('early_stop') else ''}"
            + ("" if kept is None else f"; kept {kept}{' = frozen' if kept == 0 else ''}") + ")")


def kept_step(run: dict[str, Any]) -> int | None:
    """The step of the model validation chose for the test split, when it is not the last step trained."""
    step = run.get("model_step")
    return step if run.get("selection_split") == "val" and step is not None and step != run.get("steps") else None


def held_cell(run: dict[str, Any]) -> str:
    """Validation classes held out, or why none."""
    n = run.get("val_classes")
    if n is None:
        return "?"
    return f"{n} of {run.get('train_classes_before_holdout')}" if n else \
        f"0 of {run.get('train_classes_before_holdout')} (test only)"


def _who(run: dict[str, Any]) -> str:
    return f"{run['preset']}/{run['dataset']}"


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The three targets of issue 25, each ``{"name", "verdict": holds | fails | not judged, "text"}``."""
    s, runs = result["settings"], result["runs"]
    gap = float(s.get("target_r1_gap", TARGET_R1_GAP))
    every = list(s.get("harness_backbones") or s["presets"])
    done = {(r["preset"], r["dataset"]) for r in runs}
    out = []

    # 1. within `gap` R@1 of the tuned row, every ID dataset, every preset.
    ids = [r for r in runs if r["dataset"] in s["id_datasets"]]
    judged = [r for r in ids if r["compare"].get("d_r1_vs_tuned") is not None]
    fails = [r for r in judged if r["compare"]["d_r1_vs_tuned"] < -gap]
    untuned = [_who(r) for r in ids if r not in judged]
    missing = [f"{p}/{d}" for p in every for d in s["id_datasets"] if (p, d) not in done]
    verdict = "fails" if fails else "holds" if judged and not untuned and not missing else "not judged"
    # The issue says "within": what it asks of a default is not to fall short of the tuned row; one above it passes.
    text = (f"no more than {gap:.1f} R@1 below the tuned DVA row (the issue's \"within {gap:.1f}\") on every ID "
            f"dataset for every preset: **{verdict}**"
            + (f" — more than {gap:.1f} below: " + ", ".join(f"{_who(r)} ({num(r['compare']['d_r1_vs_tuned'], signed=True)})"
                                                   for r in fails) if fails else "")
            + (f"; held on {len(judged) - len(fails)} of {len(judged)} pairs with a tuned row" if judged else "")
            + (f"; no tuned row: {', '.join(untuned)}" if untuned else "")
            + (f"; not run: {', '.join(missing)}" if missing else ""))
    out.append({"name": "id_r1", "verdict": verdict, "text": text})

    # 2. pets37 (the open set): MAP@R never below frozen, any preset.
    for open_set in s["open_set"]:
        os_runs = [r for r in runs if r["dataset"] == open_set]
        d = {r["preset"]: r["compare"].get("d_map_r_vs_frozen") for r in os_runs}
        below = [p for p, v in d.items() if v is not None and v < 0]
        missing = [p for p in every if (p, open_set) not in done]
        verdict = "fails" if below else "holds" if os_runs and not missing else "not judged"
        parts = ([", ".join(f"{p} {num(v, signed=True)}" for p, v in d.items())] if d else []) \
            + ([f"below frozen: {', '.join(below)}"] if below else []) \
            + ([f"not run: {', '.join(missing)}"] if missing else [])
        text = f"{open_set} MAP@R never below frozen: **{verdict}**" + (" — " + "; ".join(parts) if parts else "")
        out.append({"name": f"{open_set}_map_r", "verdict": verdict, "text": text})

    # 3. no run selects or stops on the test split (the recorded selection split).
    on_test = [_who(r) for r in runs if r.get("selection_split") == "test"
               or (r.get("early_stop") and r.get("eval_split") != "val")]
    on_val = sum(r.get("selection_split") == "val" for r in runs)
    verdict = "fails" if on_test else "holds" if runs else "not judged"
    text = (f"no default run selects or stops on the test split: **{verdict}** — of {len(runs)} runs, {on_val} chose "
            f"their model on validation classes, {len(runs) - on_val - len(on_test)} chose nothing (too few classes "
            "to hold out: the fixed budget, the last model)" + (f"; on the test split: {', '.join(on_test)}" if on_test else ""))
    out.append({"name": "no_test_selection", "verdict": verdict, "text": text})
    return out


def table(result: dict[str, Any]) -> str:
    """The preset x dataset table."""
    body = []
    for r in result["runs"]:
        c = r["compare"]
        body.append([r["preset"], r["dataset"], steps_cell(r), held_cell(r),
                     pair(c["frozen_test_r1"], c["frozen_test_map_r"]), pair(c["test_r1"], c["test_map_r"]),
                     pair(c["d_r1_vs_frozen"], c["d_map_r_vs_frozen"], signed=True), num(c["tuned_r1"]),
                     num(c["d_r1_vs_tuned"], signed=True),
                     num(None if r.get("train_seconds") is None else r["train_seconds"] / 60.0)])
    return C.md_table(["preset", "dataset", "steps (budget)", "val classes held out", "frozen test R@1 / MAP@R",
                       "default test R@1 / MAP@R", "change vs frozen", "tuned DVA R@1 (mean of its seeds)",
                       "default (one run) − tuned R@1",
                       "train min"], body, "llllrrrrrr")


def notes(result: dict[str, Any]) -> list[str]:
    """The sentences under the table: the open set's split, the presets without a tuned row, the rules."""
    s, out = result["settings"], []
    for name in s["open_set"]:
        f = (result.get("datasets") or {}).get(name)
        if f and not f.get("approximate"):
            d = f["default_run"]
            out.append(f"{name}: reader `{f['reader']}`, {f['rule']}: {f['train_classes']} training classes "
                       f"({f['train_images']} images), {f['test_classes']} test classes ({f['test_images']} images); "
                       f"the default command holds out {d['val_classes']} of the training classes ({d['val_images']} "
                       f"images) and trains on {d['train_images']}. No tuned row (the datasets harness does not train "
                       "on it): its tuned column is `-`.")
    tuned = [f"{r['backbone']}/{r['dataset']} {r['tuned']['steps']} steps, {len(r['tuned'].get('seeds') or [])} seed(s)"
             for r in result["runs"] if r.get("tuned")]
    if tuned:
        out.append("The tuned rows (the datasets harness's DVA, `"
                   + "`, `".join(sorted({r['tuned']['json'] for r in result['runs'] if r.get('tuned')}))
                   + "`) train the budget their select profile chose, with no early stopping: "
                   + "; ".join(dict.fromkeys(tuned)) + ". The default command trains its data-scaled budget and "
                   "keeps the model its validation classes choose; a difference within the tuned row's seed SD "
                   "(its `±` in the datasets section) is no lead.")
    frozen = [_who(r) for r in result["runs"] if kept_step(r) == 0]
    if frozen:
        out.append(f"Kept step 0 (`= frozen`): no validation evaluation beat the frozen backbone's MAP@R, so the "
                   f"model scored on the test split is the frozen backbone (zero-initialised adapters): "
                   f"{', '.join(frozen)}.")
    none = [p for p, b in (s.get("harness_backbones") or {}).items() if b is None]
    if none:
        out.append(f"{', '.join(none)}: no tuned row (the datasets harness tunes "
                   f"{', '.join(b for b in s['harness_backbones'].values() if b)}): `-`.")
    rules = {str(r.get("auto_steps")) for r in result["runs"]}
    if len(rules) > 1:
        out.append(f"The runs were made under different step-budget rules (AUTO_STEPS): {sorted(rules)}.")
    from dva.config import AUTO_STEPS

    stale = [f"{r['preset']} x {r['dataset']}" for r in result["runs"] if r.get("auto_steps") not in (None, AUTO_STEPS)]
    if stale:
        out.append(f"Made under an earlier step-budget rule than the one in force ({_rule(AUTO_STEPS)}): "
                   f"{', '.join(stale)}; `python -m benchmarks.defaults.run` runs them again under it.")
    older = [f"{r['preset']} x {r['dataset']}" for r in result["runs"]
             if f"{r['preset']} x {r['dataset']}" not in stale and not P.is_current(r)]
    if older:
        out.append(f"Made with an earlier preset (or default) than the one packaged now: {', '.join(older)}; "
                   "`python -m benchmarks.defaults.run` runs them again with it.")
    return out


def _rule(a: dict[str, int]) -> str:
    return f"clamp({a['epochs']} epochs, {a['min']}, {a['max']})"


def render_section(result: dict[str, Any]) -> str:
    """The markdown of a defaults result: table, notes, the three targets computed."""
    lines = [table(result), ""]
    lines += [f"- {t}" for t in notes(result)]
    lines += ["", "Targets (issue 25):", ""] + [f"- {t['text']}" for t in targets(result)]
    return "\n".join(lines).rstrip() + "\n"
