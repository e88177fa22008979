"""The frontier's markdown, words and figures, every number computed from the profile JSON.

* :func:`summary` — the derived figures of one result: each method's Pareto frontier, DVA against
  the full fine-tune (WiSE-FT) at equal ID R@1, who is ahead at equal training time, the targets;
* :func:`render_section` — the markdown (tables and words) of results, for docs/BENCHMARKS.md;
* :func:`figures` — ``frontier_<ds>_<bb>.png`` (ID R@1 against mean OOD R@1) and
  ``frontier_time_<ds>_<bb>.png`` (ID R@1 against training minutes).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks import _common as C
from benchmarks.datasets.render import num
from benchmarks.frontier import analysis as A

DVA, FULL = "dva", "full"
ANCHOR = "dva_anchor"


def design_changes(result: dict[str, Any]) -> list[str]:
    """The design changes a result holds (the anchored DVA, frontier.yaml's variants), in its order: each is
    compared with the full fine-tune (WiSE-FT) and with DVA at equal ID R@1, where both were measured."""
    ms = result["settings"]["methods"]
    return [m for m in ms if m == ANCHOR or (ms[m] or {}).get("variant")]


# ----------------------------------------------------------------------------- derived figures
def time_points(result: dict[str, Any], select: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """The points of the equal-compute curves: the sweep's, then the timed runs' (alpha 1; ``--timed``)
    validated as ``select`` says (default: the JSON's ``settings.timed_select``; frontier.yaml's now, from
    a plan or benchmarks.remaining): a timed run of another validation, or of none, counts for nothing
    (the next sitting drops it)."""
    want = select if select is not None else (result.get("settings") or {}).get("timed_select")
    timed = result.get("timed_points") or []
    return (result.get("points") or []) + [p for p in timed if p.get("select") is not None and p["select"] == want]


def _frozen(result: dict[str, Any]) -> dict[str, Any] | None:
    return next((p for p in result["points"] if p["frozen"]), None)


def _point(result: dict[str, Any], method: str, budget: int, alpha: float) -> dict[str, Any] | None:
    return next((p for p in result["points"] if p["method"] == method and p["budget"] == budget
                 and p["alpha"] == alpha), None)


def frontiers(result: dict[str, Any]) -> dict[str, list[A.Point]]:
    """Each method's upper Pareto frontier of (ID R@1, mean OOD R@1), the frozen point included."""
    out = {}
    for m in result["settings"]["methods"]:
        pts = [(p["id_r1"], p["mean_ood"]) for p in A.method_points(result["points"], m)
               if p["id_r1"] is not None and p["mean_ood"] is not None
               and math.isfinite(p["id_r1"]) and math.isfinite(p["mean_ood"])]
        out[m] = A.pareto(pts)
    return out


def _target2(result: dict[str, Any], method: str = DVA) -> dict[str, Any] | None:
    """The validation-chosen point of ``method`` (the target's: DVA) against the full fine-tune at the
    reference budget (alpha 1) and against frozen - slack on the target's OOD gallery; None without one."""
    s, rec = result["settings"], (result.get("recommended") or {}).get(method)
    if not rec or not rec.get("stats"):
        return None
    t = s["targets"]
    gal, full, frozen = t["ood_gallery"], _point(result, FULL, t["reference_budget"], 1.0), _frozen(result)
    r1 = (rec["stats"].get("id_r1") or [None])[0]
    ood = ((rec["stats"].get("ood") or {}).get(gal) or [None])[0]
    full_r1 = full["id_r1"] if full else None
    floor = None if frozen is None or frozen["ood"].get(gal) is None else frozen["ood"][gal] - t["ood_slack"]
    id_ok = None if r1 is None or full_r1 is None else r1 >= full_r1
    ood_ok = None if ood is None or floor is None else ood >= floor
    return {"id_r1": r1, "full_r1": full_r1, "id_ok": id_ok, "gallery": gal, "ood_r1": ood, "ood_floor": floor,
            "ood_ok": ood_ok, "holds": None if None in (id_ok, ood_ok) else bool(id_ok and ood_ok)}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The derived figures of one frontier result (what the words and figures say)."""
    s = result["settings"]
    fronts = frontiers(result)
    frozen = _frozen(result)
    skip = (frozen["id_r1"], frozen["mean_ood"]) if frozen and frozen["mean_ood"] is not None else None
    cmp = A.compare(fronts[DVA], fronts[FULL], skip) if DVA in fronts and FULL in fronts else None
    if cmp is not None:
        cmp["target_met"] = None if cmp["min_diff"] is None else cmp["min_diff"] >= s["targets"]["ood_margin"]
    # Each design change for the trade-off (the anchored DVA, the variants) against both references.
    extra = [(a, b) for a in design_changes(result) for b in (FULL, DVA)]
    pairs = {f"{a}_vs_{b}": A.compare(fronts[a], fronts[b], skip) for a, b in extra if a in fronts and b in fronts}
    # One run per method at a minute: a lead within the seeds' spread of the recommended points is no lead.
    noise = A.seed_noise(result.get("recommended") or {})
    return {"seed_noise": noise, "frontiers": {m: [list(p) for p in f] for m, f in fronts.items()},
            "dva_vs_full": cmp, "pairs": pairs,
            # a variant with budgets still to run would cut the common horizon short: it joins once all are in
            "equal_time": A.equal_time(time_points(result), [m for m in s["methods"] if not is_variant(result, m)
                                                          or variant_swept(result, m)], s["minutes"],
                                         noise["std"] if noise else 0.0),
            "target2": _target2(result), "sweep_cost": sweep_cost(result),
            # The design change's own validation-chosen point, held to the same two conditions (not the target).
            "target2_extra": {a: g for a in design_changes(result) if a in fronts
                              and (g := _target2(result, a)) is not None}}


def sweep_cost(result: dict[str, Any]) -> dict[str, Any] | None:
    """The alpha sweeps of every run summed: (image, alpha) pairs embedded, their seconds, and the seconds
    one ``embed_paths`` pass per alpha would have taken (each run's measured time per image); None without."""
    recs = [r["sweep"] for r in result.get("runs") or []
            if (r.get("sweep") or {}).get("naive_seconds_estimate") is not None]
    if not recs:
        return None
    spent, naive = sum(r["embed_seconds"] for r in recs), sum(r["naive_seconds_estimate"] for r in recs)
    return {"runs": len(recs), "image_alphas": sum(r["image_alphas"] for r in recs), "embed_seconds": spent,
            "naive_seconds": naive, "saved_fraction": 1.0 - spent / naive if naive else None,
            "decoded_images": sum(r["decoded_images"] for r in recs),
            "cached_images": sum(r["cached_images"] for r in recs),
            "cached_prefix_images": sum(r.get("cached_prefix_images", 0) for r in recs),
            "runtimes": {rt: sum(r.get("runtime", "torch") == rt for r in recs)
                         for rt in sorted({r.get("runtime", "torch") for r in recs})}}


# ----------------------------------------------------------------------------- markdown
def measured_so_far(result: dict[str, Any]) -> str:
    """Which (method, budget) points an unfinished result holds, in words: ``dva 60, 184; full 60``."""
    by: dict[str, list[int]] = {}
    for p in result["points"]:
        if not p.get("frozen") and p["budget"] not in by.setdefault(p["method"], []):
            by[p["method"]].append(p["budget"])
    return "; ".join(f"{m} {', '.join(map(str, sorted(b)))}" for m, b in by.items()) or "none"


def status_tag(result: dict[str, Any]) -> str:
    """What an unfinished result still lacks, for its heading ("" when complete)."""
    if result.get("complete"):
        return ""
    if swept(result):
        return " (every budget and alpha measured; the recommended points' extra seeds still to run)"
    return f" (unfinished: steps measured so far {measured_so_far(result)})"


def _label(result: dict[str, Any], method: str) -> str:
    """A method's label: the JSON's; frontier.yaml's for a method this JSON holds no run of (a first sitting of
    other methods), so that the words can say it is not measured."""
    if method == "frozen":
        return "frozen backbone"
    own = (result["settings"].get("methods") or {}).get(method)
    if own:
        return own["label"]
    from benchmarks.frontier.plan import FRONTIER

    every = {**FRONTIER.methods, **FRONTIER.variants}
    return every[method].label if method in every else method


def points_table(result: dict[str, Any]) -> str:
    """Every point: method, budget, alpha, validation and ID scores, each OOD R@1 and the mean, training."""
    ood = result["settings"]["ood"]
    body = [[_label(result, p["method"]), "-" if p["frozen"] else p["budget"] if p.get("timed") is None
             else f"{p['budget']} (timed, {p['timed']:g} min{_chosen(p, '; ')})", f"{p['alpha']:g}", num(p["val_r1"]),
             num(p["val_map"]), num(p["id_r1"]), num(p["id_map"]), *[num(p["ood"].get(g)) for g in ood],
             num(p["mean_ood"]), num(p["train_minutes"]), f"{p['images']:,}"] for p in time_points(result)]
    header = ["method", "steps", "alpha", "val R@1", "val MAP@R", "ID R@1", "ID MAP@R",
              *[f"OOD R@1 {g}" for g in ood], "mean OOD R@1", "train min", "images"]
    return C.md_table(header, body, "lrr" + "r" * (len(header) - 3))


def _chosen(p: dict[str, Any], sep: str) -> str:
    """Which model of a validated timed run was scored: "" for one without periodic validation."""
    if p.get("model_step") is None:
        return ""
    stop = (f", stopped {'by the collapse guard' if p.get('stop') == 'collapse guard' else 'early'} at "
            f"{p['steps']:,}" if p.get("stopped_early") else "")
    at = (f" = {num(p['train_minutes'] * p['model_step'] / p['steps'])} min" if p.get("steps")
          and p.get("train_minutes") is not None else "")
    return f"{sep}validation's best at step {p['model_step']:,}{at}{stop}"


def _ms(v: list[float] | None, n: int) -> str:
    if v is None:
        return "-"
    return f"{v[0]:.1f} ± {v[1]:.1f}" if n > 1 else f"{v[0]:.1f}"


def recommended_table(result: dict[str, Any]) -> str:
    """Each method's validation-chosen point and its test figures over its seeds (mean ± sample SD)."""
    ood = result["settings"]["ood"]
    body = []
    for m, r in (result.get("recommended") or {}).items():
        st = r.get("stats") or {}
        n = len(st.get("seeds") or [])
        body.append([_label(result, m), "- (frozen)" if r["frozen"] else r["budget"], f"{r['alpha']:g}",
                     r.get("seeds_label", ""), num(r["val_map"]), _ms(st.get("id_r1"), n), _ms(st.get("id_map"), n),
                     *[_ms((st.get("ood") or {}).get(g), n) for g in ood], _ms(st.get("mean_ood"), n)])
    header = ["method", "steps", "alpha", "seeds", "val MAP@R", "ID R@1", "ID MAP@R", *[f"OOD R@1 {g}" for g in ood],
              "mean OOD R@1"]
    return C.md_table(header, body, "lrrl" + "r" * (len(header) - 4))


def _yes(v: bool | None) -> str:
    return "not measured" if v is None else ("yes" if v else "no")


def swept(result: dict[str, Any]) -> bool:
    """Whether every (method, budget, alpha > 0) of frontier.yaml's profile has its seed-0 point: the
    frontiers are then final (the recommended points' extra seeds change their test means, not the curves).

    The profile is ``settings["profile"]``; a JSON written before it was recorded falls back on the
    settings' own methods, budgets and alphas (those of the sittings gathered in it).
    """
    s = result["settings"]
    prof = s.get("profile") or {"methods": list(s["methods"]), "budgets": s["budgets"], "alphas": s["alphas"]}
    have = {(p["method"], p["budget"], p["alpha"]) for p in result["points"] if not p["frozen"]}
    return all((m, b, float(a)) in have for m in prof["methods"] for b in prof["budgets"] for a in prof["alphas"]
               if a > 0)


def _verdict(result: dict[str, Any], v: bool | None, final: bool | None = None, methods: tuple[str, ...] = ()) -> str:
    """``_yes``, marked provisional while more points can still change it (``final``: default, the result
    is complete); ``methods``: the compared ones, a variant among them naming its own missing budgets."""
    final = result.get("complete") if final is None else final
    if v is None or final:
        return _yes(v)
    if "settings" in result and swept(result) and any(is_variant(result, m) and not variant_swept(result, m)
                                                      for m in methods):
        why = "the variant's other budgets still to run"
    elif "settings" in result and swept(result):
        why = "the recommended points' seeds still to run"
    else:
        why = "the sweep is unfinished"
    return f"{_yes(v)} (provisional: {why})"


def is_variant(result: dict[str, Any], method: str) -> bool:
    return bool(((result["settings"].get("methods") or {}).get(method) or {}).get("variant"))


def variant_swept(result: dict[str, Any], method: str) -> bool:
    """Whether a design variant has a point at every budget and alpha > 0 of the profile (a variant is
    run with one seed, by name: its figures are final then, once the profile's sweep is in too)."""
    s = result["settings"]
    prof = s.get("profile") or {"budgets": s["budgets"], "alphas": s["alphas"]}
    have = {(p["budget"], float(p["alpha"])) for p in result["points"] if p["method"] == method}
    return swept(result) and all((b, float(a)) in have for b in prof["budgets"] for a in prof["alphas"] if a > 0)


def _final(result: dict[str, Any], *methods: str) -> bool:
    """Whether a comparison of ``methods``' frontiers is final: the profile swept, and each variant among them."""
    return swept(result) and all(variant_swept(result, m) for m in methods if is_variant(result, m))


def _levels(n: int) -> str:
    return f"{n} measured level{'s' if n != 1 else ''}"


def _not_compared(c: dict[str, Any] | None, a: str, b: str) -> str:
    """Why two frontiers were not compared: ranges apart, or only the shared frozen point in common."""
    if c is None:
        return f"the frontiers of {a} and of {b} cover ID R@1 ranges that do not overlap; not compared."
    return f"the frontiers of {a} and of {b} share no measured ID R@1 level but the frozen point; not compared."


def frontier_words(result: dict[str, Any], sm: dict[str, Any]) -> str:
    """DVA's frontier against the full fine-tune's (WiSE-FT) at equal ID R@1, in words."""
    s, c = result["settings"], sm["dva_vs_full"]
    margin = s["targets"]["ood_margin"]
    gals = ", ".join(s["ood"])
    if c is None or c["min_diff"] is None:
        return (f"- Frontier (ID R@1 against the mean OOD R@1 over {gals}): "
                + _not_compared(c, "DVA", "the full fine-tune (WiSE-FT)"))
    worst = min(c["levels"], key=lambda lv: lv["diff"])
    left_out = ", the shared frozen point left out" if c.get("skipped") else ""
    return (f"- Frontier (ID R@1 against the mean OOD R@1 over {gals}; each method's Pareto-upper points joined, "
            f"linear between them: the envelope over every measured (budget, alpha) on test figures, for both "
            f"methods alike: what each can reach, not a choice; the validation-chosen points follow): over the ID "
            f"R@1 range both DVA's and the full fine-tune's (WiSE-FT) frontiers "
            f"cover, {num(c['lo'])} to {num(c['hi'])}, DVA's mean OOD R@1 minus the full fine-tune's is "
            f"{num(c['min_diff'], signed=True)} at its least (at ID R@1 {num(worst['id_r1'])}, over "
            f"{_levels(len(c['levels']))}{left_out}) and "
            f"{num(c['mean_diff'], signed=True)} on average over the range. DVA at or above at every measured "
            f"level: {_verdict(result, c['at_or_above'], swept(result))}. Target ({num(margin, signed=True)} OOD "
            f"at equal ID): {_verdict(result, c['target_met'], swept(result))}.")


def pair_words(result: dict[str, Any], sm: dict[str, Any]) -> list[str]:
    """Each design change (:func:`design_changes`) against each reference, measured: the first method's mean
    OOD R@1 minus the second's at equal ID R@1."""
    out = []
    for key, c in (sm.get("pairs") or {}).items():
        a, b = key.split("_vs_")
        la, lb = _label(result, a), _label(result, b)
        if c is None or c["min_diff"] is None:
            out.append(f"- {la} against {lb}: " + _not_compared(c, la, lb))
            continue
        out.append(f"- {la} against {lb}, at equal ID R@1 over {num(c['lo'])} to {num(c['hi'])}: mean OOD R@1 "
                   f"{num(c['min_diff'], signed=True)} at its least and {num(c['mean_diff'], signed=True)} on "
                   f"average ({_levels(len(c['levels']))}); at or above at every level: "
                   f"{_verdict(result, c['at_or_above'], _final(result, a, b), (a, b))}.")
    return out


def time_words(result: dict[str, Any], sm: dict[str, Any]) -> str:
    """Who is ahead in ID R@1 at each of the equal-compute minutes, in words."""
    clock = CLOCK_WORDS[result["settings"]["clock"]]
    parts = []
    for e in sm["equal_time"]:
        got = {m: v for m, v in e["id_r1"].items() if v is not None}
        vals = ", ".join(f"{_label(result, m)} {num(v)}" for m, v in got.items())
        when = (f"at {e['minutes']:.1f} min (the longest every measured method trained)" if e.get("horizon")
                else f"at {e['minutes']:g} min")
        missing = (f"; {', '.join(_label(result, m) for m in e['id_r1'] if m not in got)} not measured"
                   if len(got) < len(e["id_r1"]) else "")
        src = e.get("source") or {}
        curve = [m for m in got if src.get(m) == "curve"]
        if not e.get("horizon") and curve and any(src.get(m) == "timed" for m in got):
            missing += (f"; {', '.join(_label(result, m) for m in curve)} read off the time curve (linear between "
                        "its measured points), not a validated run sized to the minute")
        if e["ahead"]:
            parts.append(f"{when}: {_label(result, e['ahead'])} ahead ({vals}{missing})")
        elif e.get("tie"):
            parts.append(f"{when}: a tie at the top ({vals}{missing})")
        elif e.get("within_noise"):
            parts.append(f"{when}: no method ahead by more than the seeds' spread ({vals}{missing})")
        else:
            parts.append(f"{when}: not measured" + (f" (only {vals})" if got else ""))
    noise = sm.get("seed_noise")
    spread = ("" if not noise else f"; one run per method, so a lead of at most {num(noise['std'])} R@1, the "
              f"largest std over seeds of a recommended point's test ID R@1 ({_label(result, noise['method'])}, "
              f"{noise['seeds']} seeds), is no lead")
    return (f"- Equal compute, ID R@1 of the alpha-1 models at equal {clock}: at a comparison minute a method's "
            "run sized to it (the model its validation chose) where one was measured, else linear between the "
            f"sweep's budgets (last models) and from the frozen backbone at 0 min ({clock_note(result)}{spread}): "
            + "; ".join(parts) + "." + timed_note(result))


def timed_note(result: dict[str, Any]) -> str:
    """What the timed runs (``--timed``) add to the equal-compute words; "" without any."""
    tp = [p for p in time_points(result) if p.get("timed") is not None]  # those validated as the JSON's settings say
    if not tp:
        return ""
    plan = result.get("timed_plan") or {}
    each = "; ".join(f"{_label(result, p['method'])} {p['budget']:,} steps for {p['timed']:g} min "
                     f"({num(p['train_minutes'])} min on the clock{_chosen(p, ', ')})" for p in tp)
    margin = {v.get("margin") for v in plan.values()} - {None}
    sel = result["settings"].get("timed_select")
    how = ("" if sel is None or all(p.get("model_step") is None for p in tp) else
           f" Each evaluates on the validation classes every {sel['eval_every']} epoch"
           f"{'s' * (sel['eval_every'] != 1)} and is scored with the model of its best validation MAP@R"
           + (f", stopped after {sel['patience']} evaluations without a better one; one stopped early holds that "
              "model up to its minute" if sel["patience"] else "") + ".")
    return (" The runs sized to a comparison minute (steps = minutes x 60"
            + (f" x {', '.join(f'{m:g}' for m in sorted(margin))}" if margin else "")
            + f" / the method's least seconds per step when planned, so a run's chosen model can come from up to "
            f"that margin past the minute), alpha 1 only, not candidates of the recommended points: {each}.{how}")


def _order(result: dict[str, Any]) -> list[str]:
    """The JSON's methods in its settings' order (the profile's, then the variants), then any other."""
    own = list((result["settings"].get("methods") or {}))
    return own + sorted({r.get("method") for r in result.get("runs") or []} - set(own) - {None})


CLOCK_WORDS = {
    "least_step_seconds": "training minutes (a run's steps x its method's least seconds per step over all its runs, "
                          "as the cost of a step alone: load beside a run only adds to its clock; the one-off prefix "
                          "caches and boxes not counted)",
    "train_seconds": "training minutes (optimisation steps; the one-off prefix caches and boxes not counted)",
    "train_and_prep_seconds": "training minutes (steps + caches and boxes)",
}


def clock_note(result: dict[str, Any]) -> str:
    """What the clock rests on: each method's seconds per step (least; median, most, runs) and how far apart
    runs of the same settings were; for a clock of each run's own time, that it is wall time."""
    per, sp = result.get("step_seconds") or {}, result.get("step_spread")
    same = (f"runs of the same settings took up to {sp['ratio']:.1f}x as long as each other "
            f"({_label(result, sp['method'])}, {sp['steps']} steps, {sp['runs']} runs)" if sp else "")
    if result["settings"]["clock"] != "least_step_seconds":
        return "wall time on a shared machine: each run's load average is in the JSON" + (f"; {same}" if same else "")
    order = _order(result)
    each = ", ".join(f"{_label(result, m)} {v['min']:.2f} (median {v['median']:.2f}, most {v['max']:.2f}, "
                     f"{v['runs']} run{'s' * (v['runs'] != 1)})"
                     for m, v in sorted(per.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))
    return f"seconds per step, least: {each}" + (f"; {same}" if same else "")


def target2_words(result: dict[str, Any], sm: dict[str, Any], method: str = DVA) -> str:
    """The validation-chosen point of ``method`` against the reference full fine-tune and frozen - slack:
    the target for DVA; for a design change (:func:`design_changes`), the same two conditions."""
    t = result["settings"]["targets"]
    g = sm["target2"] if method == DVA else (sm.get("target2_extra") or {}).get(method)
    rec = (result.get("recommended") or {}).get(method)
    if g is None or rec is None:
        return f"- The validation-chosen {_label(result, method)} point: not measured."
    # a variant runs one seed (labelled): final once its own points are all in
    final = _final(result, method) if is_variant(result, method) else _seeded(result, rec)
    return (f"- The validation-chosen {_label(result, method)} point ({_where(rec)}; {rec['seeds_label']}): test ID R@1 "
            f"{num(g['id_r1'])} against the {t['reference_budget']}-step full fine-tune's {num(g['full_r1'])} "
            f"({_yes(g['id_ok'])}); {g['gallery']} R@1 {num(g['ood_r1'])} against frozen - "
            f"{t['ood_slack']:g} = {num(g['ood_floor'])} ({_yes(g['ood_ok'])}). "
            + ("Target" if method == DVA else "Both conditions (the target's, for this method)")
            # a variant runs one seed (labelled): final once its own points are all in
            + f": {_verdict(result, g['holds'], final, (method,))}.")


def _where(rec: dict[str, Any]) -> str:
    return "alpha 0 (the frozen backbone)" if rec["frozen"] else f"{rec['budget']} steps, alpha {rec['alpha']:g}"


def recommended_deltas(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each method's validation-chosen point against the full fine-tune's (WiSE-FT): the differences of
    their test means (ID R@1, mean OOD R@1), and whether it is higher (lower) on both as printed."""
    recs = result.get("recommended") or {}
    ref = (recs.get(FULL) or {}).get("stats") or {}
    if not ref.get("id_r1") or not ref.get("mean_ood"):
        return {}
    out = {}
    for m, r in recs.items():
        st = r.get("stats") or {}
        if m == FULL or not st.get("id_r1") or not st.get("mean_ood"):
            continue
        d_id, d_ood = st["id_r1"][0] - ref["id_r1"][0], st["mean_ood"][0] - ref["mean_ood"][0]
        shown = (round(d_id, 1), round(d_ood, 1))  # the verdict as printed: a printed 0.0 is no lead
        out[m] = {"id_r1": d_id, "mean_ood": d_ood, "higher_on_both": min(shown) > 0, "lower_on_both": max(shown) < 0}
    return out


def recommended_words(result: dict[str, Any]) -> str | None:
    """The validation-chosen points set side by side (test means over their seeds), in words; None
    without the full fine-tune's point to compare with."""
    deltas = recommended_deltas(result)
    if not deltas:
        return None
    recs = result["recommended"]
    parts = []
    for m, d in deltas.items():
        both = " (higher on both)" if d["higher_on_both"] else " (lower on both)" if d["lower_on_both"] else ""
        parts.append(f"{_label(result, m)} ({_where(recs[m])}; {recs[m]['seeds_label']}) "
                     f"{num(d['id_r1'], signed=True)} ID R@1 and {num(d['mean_ood'], signed=True)} mean OOD R@1{both}")
    ref = recs[FULL]
    # the profile's methods' seeds decide "provisional"; a variant (one seed, in its label) its own points
    final = all(_final(result, m) if is_variant(result, m) else _seeded(result, recs[m]) for m in [FULL, *deltas])
    return (f"- The validation-chosen points against the full fine-tune's (WiSE-FT; {_where(ref)}; "
            f"{ref['seeds_label']}), test means: " + "; ".join(parts) + "."
            + ("" if final else " Provisional: " + (
                "the sweep is unfinished." if not swept(result)
                else "a variant's other budgets still to run." if any(is_variant(result, m) and not variant_swept(
                    result, m) for m in deltas) else "the recommended points' seeds still to run.")))


def _seeded(result: dict[str, Any], rec: dict[str, Any]) -> bool:
    """Whether a recommended point is final: every budget and alpha measured (the choice cannot move)
    and its own seeds all in (the other methods' seeds do not change its figures)."""
    return swept(result) and len((rec.get("stats") or {}).get("seeds") or []) >= result["settings"]["seeds"]


def cost_words(sm: dict[str, Any]) -> str:
    """What scoring every alpha cost against one plain ``embed_paths`` pass per alpha, in words."""
    c = sm["sweep_cost"]
    if c is None:
        return "- Cost of the alpha sweeps: not measured."
    saved = "" if c["saved_fraction"] is None else f", {100 * c['saved_fraction']:.0f}% less"
    return (f"- Cost of the alpha sweeps ({c['runs']} runs): {c['image_alphas']:,} (image, alpha) embeddings in "
            f"{c['embed_seconds'] / 60:.1f} min, against ~{c['naive_seconds'] / 60:.1f} min for one `embed_paths` "
            f"pass per alpha at each run's measured time per image{saved} (each image decoded once per process, "
            f"{c['cached_images']:,} read back from the crop cache, {c['decoded_images']:,} decoded; the frozen "
            "prefix once per image for the adapter models"
            + (f", {c.get('cached_prefix_images', 0):,} of them read back from the prefix cache of an earlier run"
               if c.get("cached_prefix_images") else "") + "; " + runtime_words(c.get("runtimes") or {}) + ").")


def validation_words(result: dict[str, Any]) -> str | None:
    """The design changes against DVA where a choice between them is made, on the validation classes: each
    validation-chosen point's validation score (seed 0, as chosen), its difference from DVA's and the highest;
    None without DVA's point or a design change's."""
    rec, metric = result.get("recommended") or {}, result["settings"]["metric"]
    key = {"map@r": "val_map", "recall@1": "val_r1"}.get(metric)
    d = rec.get(DVA) or {}
    changes = [m for m in design_changes(result) if (rec.get(m) or {}).get(key) is not None]
    if key is None or d.get(key) is None or not changes:
        return None
    parts = [f"{_label(result, m)} {num(rec[m][key])} ({num(rec[m][key] - d[key], signed=True)}"
             + ("" if not is_variant(result, m) or variant_swept(result, m) else "; budgets still to run") + ")"
             for m in changes]
    top = sorted([DVA, *changes], key=lambda m: -rec[m][key])
    tie = [m for m in (DVA, *changes) if num(rec[m][key]) == num(rec[top[0]][key])]  # equal as printed
    best = (f"highest: {_label(result, top[0])}" if len(tie) == 1
            else f"a tie at the top ({', '.join(_label(result, m) for m in tie)})")
    return (f"- On the validation classes (the test split takes no part), {metric.upper()} of each validation-chosen "
            f"point (seed 0): DVA {num(d[key])}; " + "; ".join(parts) + f"; {best}.")


def runtime_words(runtimes: dict[str, int]) -> str:
    """What ran the networks: ``networks on torch``, or each runtime with its runs when they were mixed."""
    name = {"torch": "torch", "onnx": "onnxruntime"}
    if len(runtimes) <= 1:
        return f"networks on {name.get(next(iter(runtimes), 'torch'), 'torch')}"
    return "networks on " + " and ".join(f"{name.get(rt, rt)} ({n} runs)" for rt, n in runtimes.items())


def section_of(result: dict[str, Any]) -> str:
    """The markdown of one (dataset, backbone): heading, settings, words, tables and figure links."""
    s = result["settings"]
    sm = summary(result)
    tags = ("" if s["selected"] else " — UNSELECTED (every select stage's first candidate)") \
        + status_tag(result)
    ds, bb = s["dataset"], s["backbone"]
    head = (f"### Frontier: {ds} x {bb}{tags}\n\n"
            f"Budgets {', '.join(map(str, s['budgets']))} steps; alphas {', '.join(f'{a:g}' for a in s['alphas'])} "
            f"(alpha 0 = the frozen backbone, one run); trained on the training classes less the last "
            f"{s['val_classes']} (validation), the last model of each budget; adapter settings: {s['selection']}"
            + (f" ({s['select_json']})" if s.get("select_json") else "") + f". One seed per point; the recommended "
            f"points (validation {s['metric'].upper()}) {s['seeds']} seed{'s' if s['seeds'] != 1 else ''}"
            + ("" if result.get("complete") or s["seeds"] == 1
               else " once the sweep is finished (the table says how many so far)")
            + f". OOD: {', '.join(s['ood'])}"
            + (f" (not found: {', '.join(s['ood_missing'])})" if s.get("ood_missing") else "") + ".")
    words = "\n".join([frontier_words(result, sm), *pair_words(result, sm),
                       *filter(None, [validation_words(result)]), time_words(result, sm),
                       target2_words(result, sm),
                       *[target2_words(result, sm, a) for a in (sm.get("target2_extra") or {})],
                       *filter(None, [recommended_words(result)]), cost_words(sm)])
    figs = (f"![ID against OOD R@1, {ds} x {bb}](frontier_{ds}_{bb}.png)\n"
            f"![ID R@1 against training minutes, {ds} x {bb}](frontier_time_{ds}_{bb}.png)")
    return "\n\n".join([head, words, recommended_table(result), points_table(result), figs])


def render_section(results: list[dict[str, Any]]) -> str:
    """The frontier markdown of ``results`` (one per (dataset, backbone)), then which hold each target."""
    parts = [section_of(r) for r in results]
    name = lambda r: f"{r['settings']['dataset']} x {r['settings']['backbone']}"  # noqa: E731
    t1 = [name(r) for r in results if swept(r) and (summary(r)["dva_vs_full"] or {}).get("target_met")]
    decided = [r for r in results if (rec := (r.get("recommended") or {}).get(DVA)) and _seeded(r, rec)]
    t2 = [name(r) for r in decided if (summary(r)["target2"] or {}).get("holds")]
    if results:
        n_swept = sum(swept(r) for r in results)
        open_ = [name(r) for r in results if not r.get("complete")]
        parts.append(f"Targets: DVA's frontier at least the margin above the full fine-tune's at every measured "
                     f"equal-ID level on: {', '.join(t1) or 'none'} (of {n_swept} result(s) with every budget and "
                     f"alpha measured); the validation-chosen DVA point at or above the reference full fine-tune with "
                     f"the OOD floor on: {', '.join(t2) or 'none'} (of {len(decided)} result(s) with that point's seeds in)."
                     + (f" Not complete: {', '.join(open_)}." if open_ else ""))
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- figures
def figures(results: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Per result: the frontier figure and the equal-compute figure in ``folder``; their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for res in results:
        s = res["settings"]
        ds, bb, sm = s["dataset"], s["backbone"], summary(res)
        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        for i, m in enumerate(s["methods"]):
            color = f"C{i}"
            pts = [p for p in res["points"] if p["method"] == m and p["mean_ood"] is not None and p["id_r1"] is not None]
            ax.scatter([p["id_r1"] for p in pts], [p["mean_ood"] for p in pts], color=color, s=14, alpha=0.5)
            for p in pts:
                ax.annotate(f"{p['budget']}/{p['alpha']:g}", (p["id_r1"], p["mean_ood"]), fontsize=5,
                            xytext=(2, 2), textcoords="offset points", color=color)
            f = sm["frontiers"][m]
            style = "--o" if (s["methods"][m] or {}).get("variant") else "-o"  # a design variant: dashed
            ax.plot([x for x, _ in f], [y for _, y in f], style, color=color, ms=4, label=_label(res, m))
        fz = _frozen(res)
        if fz is not None and fz["mean_ood"] is not None:
            ax.scatter([fz["id_r1"]], [fz["mean_ood"]], marker="*", s=160, color="k", zorder=5, label="frozen")
        ax.set_xlabel(f"ID R@1 (%), {ds} test classes")
        ax.set_ylabel(f"mean OOD R@1 (%): {', '.join(s['ood'])}")
        ax.set_title(f"{ds} x {bb}: frontier over budgets (steps) / alphas", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out.append(C.save_figure(fig, Path(folder) / f"frontier_{ds}_{bb}.png"))
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        tpts = time_points(res)
        for i, m in enumerate(s["methods"]):
            c = A.time_curve(tpts, m)
            ax.plot([x for x, _ in c], [y for _, y in c], "-", color=f"C{i}", label=_label(res, m))
            real = A.time_curve(tpts, m, hold=False)  # markers on measured points only, not a held best model's end
            ax.plot([x for x, _ in real], [y for _, y in real], "o", color=f"C{i}")
            for p in (p for p in tpts if p["method"] == m and p["alpha"] == 1.0 and p["id_r1"] is not None
                      and p["train_minutes"] is not None):
                ax.annotate(str(p["budget"]) + ("*" if p.get("timed") is not None else ""),
                            (p["train_minutes"], p["id_r1"]), fontsize=6, xytext=(2, 2),
                            textcoords="offset points", color=f"C{i}")
        longest = max((x for m in s["methods"] for x, _ in A.time_curve(tpts, m)), default=0.0)
        for t in s["minutes"]:
            if t <= 1.2 * longest:  # a comparison minute far right of every run would only squash the curves
                ax.axvline(t, color="grey", lw=0.5, ls=":")
        if fz is not None and fz["id_r1"] is not None:
            ax.axhline(fz["id_r1"], color="k", lw=0.8, ls="--", label="frozen")
        ax.set_xlim(left=0)  # linear: every curve starts at the frozen backbone, 0 min
        ax.set_xlabel("training minutes (" + ("steps x least s/step" if s["clock"] == "least_step_seconds"
                                              else s["clock"]) + "); point labels: steps (* a timed run)")
        ax.set_ylabel(f"ID R@1 (%), {ds}")
        ax.set_title(f"{ds} x {bb}: equal compute (alpha 1)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out.append(C.save_figure(fig, Path(folder) / f"frontier_time_{ds}_{bb}.png"))
    return out
