#!/usr/bin/env python
"""What the dataset, defaults and frontier benchmarks still have to run, in order; ``--run`` runs it.

Each item is one resumable profile command of ``benchmarks.datasets``, ``benchmarks.defaults`` or
``benchmarks.frontier``; whether it is done is read from its result JSON under benchmarks/results
(nothing else is remembered). From the repository root:

    python -m benchmarks.remaining                      # every item: done / to run / waiting, its command
    python -m benchmarks.remaining --estimate           # + the time estimate each command's own --plan prints
    python -m benchmarks.remaining --run --minutes 110  # run the items in order; stop at 110 minutes

``--run`` starts the first item that is to run, re-renders its docs section when it finishes and
goes on. At ``--minutes`` it stops the item in flight (its finished runs are kept, a training run
resumes from its last save) and exits: the sittings of under 2 hours that a CPU session needs,
or one long sitting on a machine with a GPU (``--minutes 0``: no limit).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from benchmarks import _common as C
from benchmarks.datasets.plan import TABLE

RESULTS = C.RESULTS
# The order of the work (the issues' order): the datasets harness first, the default command and the
# frontier build on its choices; within each, MobileNetV2, then EfficientNet-Lite2, then the ViT-S/14
# (the three of the datasets study), then Lite0 and Lite1 (their select profiles choose those presets'
# settings, their main profiles hold the tuned DVA row); a preset after the backbone whose tuned rows
# it is compared with.
BACKBONE_ORDER = ("mobilenetv2", "lite2", "vit_s14", "lite0", "lite1")
PRESETS_AFTER = {"mobilenetv2": ("mobilenetv2",), "lite2": ("lite2",), "lite0": ("lite0",), "lite1": ("lite1",),
                 "vit_s14": ("vit_s14",)}


class Item(NamedTuple):
    """One profile command: what it is, its state (``done`` / ``to run`` / ``waiting: ...``) and argv."""

    benchmark: str  # datasets | defaults | frontier
    name: str
    state: str
    argv: list[str]


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def select_done(dataset: str, backbone: str, results: Path = RESULTS) -> bool:
    """The select profile of the pair finished every stage."""
    res = _json(results / "datasets" / f"{dataset}_{backbone}_select.json")
    return bool(res and res.get("complete"))


def main_done(dataset: str, backbone: str, results: Path = RESULTS) -> bool:
    """The main profile of the pair holds every main row of the backbone (harness.yaml) at its default seeds
    (not ``--quick``)."""
    res = _json(results / "datasets" / f"{dataset}_{backbone}_main.json")
    if not res:
        return False
    s = res.get("settings") or {}
    return (not s.get("quick") and set(TABLE.backbones[backbone].main_rows) <= set(s.get("rows") or [])
            and len(s.get("seeds") or []) >= TABLE.backbones[backbone].default_seeds)


def defaults_done(preset: str, results: Path = RESULTS) -> bool:
    """Every dataset of the defaults benchmark has a run of ``preset`` made with today's default command."""
    from benchmarks.defaults import plan as DP

    res = _json(results / "defaults.json") or {}
    have = {r["dataset"] for r in res.get("runs") or [] if r.get("preset") == preset and DP.is_current(r)}
    return set(DP.datasets()) <= have


def frontier_done(dataset: str, backbone: str, results: Path = RESULTS) -> bool:
    """The frontier JSON of the pair holds frontier.yaml's whole profile, seeds included."""
    res = _json(results / "frontier" / f"{dataset}_{backbone}.json")
    return bool(res and res.get("complete"))


def variants_to_run(dataset: str, backbone: str, results: Path = RESULTS) -> tuple[str, list[str], str] | None:
    """The state of the frontier's design variants on the pair, the variants still to run and a note; None when
    frontier.yaml has none for the backbone. They are wanted once the pair's sweep is in and shows DVA's
    frontier not at or above the full fine-tune's (WiSE-FT), as issue 26 asks; a variant that is DVA
    itself on the pair (the select profile chose its setting) is not wanted."""
    from benchmarks.frontier import plan as F
    from benchmarks.frontier import render as R

    names = [n for n, m in F.FRONTIER.variants.items() if m.applies_to(backbone)]
    if not names:
        return None
    res = _json(results / "frontier" / f"{dataset}_{backbone}.json")
    if not res or "settings" not in res or not R.swept(res):
        return f"waiting: the {dataset} x {backbone} frontier's sweep", names, ""
    if (R.summary(res)["dva_vs_full"] or {}).get("at_or_above"):
        return "done", [], " (not needed: DVA's frontier at or above the full fine-tune's)"
    # the tokens the pair's runs trained with (the select JSON's at the time), not today's select JSON
    chosen = (res["settings"].get("chosen_tokens") or {})
    base = F.common(TABLE, dataset, backbone, "ROOT", Path("cache"), 2)
    resolved = {n: F.FRONTIER.variants[n].resolve(backbone, chosen) for n in names}
    wanted = [n for n in names if resolved[n] is not None and not F.same_as_row(
        TABLE, dataset, backbone, base, chosen, resolved[n], F.FRONTIER.budgets[0])]
    if not wanted:
        return "done", [], " (not needed: no variant differs from DVA on this pair)"
    from benchmarks.frontier.run import method_settings

    # a variant's points count when they were made with today's settings of it (else the next sitting drops them)
    same = {n for n in wanted if json.dumps((res["settings"].get("methods") or {}).get(n))
            == json.dumps(method_settings(resolved[n]))}
    have = {(p["method"], p["budget"]) for p in res.get("points") or [] if p["method"] in same}
    todo = [n for n in wanted if not all((n, b) in have for b in F.FRONTIER.budgets)]
    return ("to run" if todo else "done"), todo, ""


def timed_to_run(dataset: str, backbone: str, minutes: float, results: Path = RESULTS) -> tuple[str, list[str]]:
    """The state of the pair's equal-compute runs at ``minutes`` (``--timed``) and the methods still to run:
    wanted once the pair's profile is complete, for each of frontier.yaml's ``timed_methods`` whose curve
    (budgets and timed runs so far; those validated as frontier.yaml's ``timed_select`` says now) ends before
    ``minutes``."""
    from benchmarks.frontier import analysis as A
    from benchmarks.frontier import render as R
    from benchmarks.frontier.plan import FRONTIER, timed_select

    res = _json(results / "frontier" / f"{dataset}_{backbone}.json")
    if not res or not res.get("complete"):
        return f"waiting: the {dataset} x {backbone} frontier", []
    pts = R.time_points(res, timed_select(FRONTIER))
    todo = [m for m in FRONTIER.timed_methods if not A.reaches(pts, m, minutes)]
    return ("to run" if todo else "done"), todo


def _module(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", name, *args]


def items(results: Path = RESULTS) -> list[Item]:
    """Every profile of the three benchmarks in the order of the work (datasets, defaults, frontier; each
    by backbone), with its state."""
    from benchmarks.defaults import plan as DP
    from benchmarks.frontier.plan import FRONTIER

    out: list[Item] = []
    backbones = [b for b in BACKBONE_ORDER if b in TABLE.backbones]
    for bb in backbones:  # the datasets harness first: the others build on its choices and tuned rows
        for ds in TABLE.datasets:
            sel = select_done(ds, bb, results)
            pair = ("--dataset", ds, "--backbone", bb)
            out.append(Item("datasets", f"{ds} x {bb}: select", "done" if sel else "to run",
                            _module("benchmarks.datasets.run", *pair, "--profile", "select")))
            state = "done" if main_done(ds, bb, results) else ("to run" if sel else "waiting: its select profile")
            out.append(Item("datasets", f"{ds} x {bb}: main", state,
                            _module("benchmarks.datasets.run", *pair, "--profile", "main")))
    packaged = DP.presets()
    for p in [p for bb in backbones for p in PRESETS_AFTER.get(bb, ()) if p in packaged]:
        out.append(Item("defaults", f"preset {p}", "done" if defaults_done(p, results) else "to run",
                        _module("benchmarks.defaults.run", "--presets", p)))
    for bb in [b for b in backbones if b in FRONTIER.backbones]:
        for ds in FRONTIER.datasets:
            state = ("done" if frontier_done(ds, bb, results)
                     else "to run" if select_done(ds, bb, results) else f"waiting: the {ds} x {bb} select profile")
            out.append(Item("frontier", f"{ds} x {bb}", state,
                            _module("benchmarks.frontier.run", "--dataset", ds, "--backbone", bb)))
            var = variants_to_run(ds, bb, results)
            if var is not None:  # after the pair's profile: its design variants, one seed each, by name
                vstate, todo, note = var
                names = todo or [n for n, m in FRONTIER.variants.items() if m.applies_to(bb)]
                out.append(Item("frontier", f"{ds} x {bb}: variants{note}", vstate,
                                _module("benchmarks.frontier.run", "--dataset", ds, "--backbone", bb,
                                        "--methods", ",".join(names), "--seeds", "1")))
            for t in FRONTIER.minutes:  # then the runs that carry the equal-compute curves to each minute
                tstate, tmethods = timed_to_run(ds, bb, t, results)
                out.append(Item("frontier", f"{ds} x {bb}: equal compute at {t:g} min"
                                + (f" ({', '.join(tmethods)})" if tmethods else ""), tstate,
                                _module("benchmarks.frontier.run", "--dataset", ds, "--backbone", bb,
                                        "--timed", f"{t:g}")))
    return out


def command_text(argv: list[str]) -> str:
    """The command as a user types it from the repository root."""
    return " ".join(["python", *argv[1:]])


def estimate(item: Item, timeout: float = 300.0) -> str:
    """The lines of the item's own ``--plan`` that give its total (estimates from measured runs, what is
    left to run), with the frontier's seeds after its sweep."""
    done = subprocess.run([*item.argv, "--plan"], capture_output=True, text=True, timeout=timeout,
                          cwd=C.REPO, env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")})
    lines = [ln.strip() for ln in done.stdout.splitlines()]
    total = [ln for ln in lines if ln.startswith("estimated total") or re.match(r"then \d+ more seed", ln)]
    return "; ".join(total) or f"(no estimate: --plan exited {done.returncode})"


def minutes_of(estimate_line: str) -> float:
    """The minutes an :func:`estimate` line adds up to (its ``~N min`` figures: the run's total and, for the
    frontier, its seeds' upper bound); 0 when it gives none."""
    return float(sum(int(m) for m in re.findall(r"~(\d+) min", estimate_line)))


def listing(todo: list[Item], with_estimates: bool = False) -> list[str]:
    """One line per item (state, benchmark, name), its command under it when it is not done; with
    estimates, each item's own (a waiting item's is planned with every select stage's first candidate)
    and their sum."""
    out, total, unknown = [], 0.0, 0
    for it in todo:
        out.append(f"[{it.state}] {it.benchmark}: {it.name}")
        if it.state != "done":
            out.append(f"    {command_text(it.argv)}")
            if with_estimates:
                line = estimate(it)
                total += minutes_of(line)
                # an item with runs of no measured cost (a backbone not run yet) adds only what is known
                unknown += "without a measured cost" in line or line.startswith("(no estimate")
                out.append(f"    {line}")
    n = sum(it.state != "done" for it in todo)
    out.append(f"{len(todo) - n} of {len(todo)} done; {n} to run or waiting"
               + (f"; ~{total / 60:.1f} h by the estimates (2 CPU cores, as the measured runs)"
                  + (f", {unknown} item(s) not or not wholly estimated: more" if unknown else "")
                  if with_estimates else ""))
    return out


DOCS = {"datasets": ("benchmarks.datasets.docs", "benchmarks.defaults.docs"),
        "defaults": ("benchmarks.defaults.docs",), "frontier": ("benchmarks.frontier.docs",)}


def run_items(minutes: float, results: Path = RESULTS, log: Callable[[str], None] = print) -> int:
    """Run the items that are to run, in order, re-rendering docs after each; stop at ``minutes`` (0: never).

    Returns 0 when nothing is left to run (or the time is up), else the failing command's exit status.
    """
    deadline = time.monotonic() + 60.0 * minutes if minutes > 0 else None
    tried: set[tuple[str, str]] = set()  # run once per invocation: one that ends unfinished is not retried
    while True:
        nxt = next((it for it in items(results) if it.state == "to run" and (it.benchmark, it.name) not in tried), None)
        if nxt is None:
            log("nothing left to run" + ("" if all(it.state == "done" for it in items(results))
                                         else " (the rest waits on items that did not finish)"))
            return 0
        if deadline is not None and time.monotonic() >= deadline:
            log(f"[{time.strftime('%H:%M:%S')}] {minutes:g} minutes: stopped before {nxt.benchmark}: {nxt.name}")
            return 0
        tried.add((nxt.benchmark, nxt.name))
        log(f"[{time.strftime('%H:%M:%S')}] {nxt.benchmark}: {nxt.name}\n    {command_text(nxt.argv)}")
        rc = _run_until(nxt.argv, deadline)
        if rc is None:
            log(f"[{time.strftime('%H:%M:%S')}] {minutes:g} minutes: stopped (it resumes: run the same command again)")
            return 0
        if rc != 0:
            log(f"{command_text(nxt.argv)} exited {rc}: stopped here")
            return rc
        for mod in DOCS[nxt.benchmark]:
            subprocess.run(_module(mod), cwd=C.REPO, check=False)


class _Terminated(Exception):
    """SIGTERM or SIGHUP reached this process (a scheduler, ``timeout``, a closed terminal)."""


def _terminated(signum: int, _frame: object) -> None:
    raise _Terminated(signal.Signals(signum).name)


def _run_until(argv: list[str], deadline: float | None) -> int | None:
    """Run ``argv`` in its own process group; at ``deadline`` stop the group (None), else its exit status.

    The item runs in a session of its own (so that stopping it reaches its run subprocesses, and a
    Ctrl-C in the terminal reaches this process first): Ctrl-C, SIGTERM and SIGHUP here stop the
    item's group before this process exits, so no sitting is left training in the background.
    """
    proc = subprocess.Popen(argv, cwd=C.REPO, start_new_session=True)
    old = {sig: signal.signal(sig, _terminated) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _stop(proc)
        return None
    except (KeyboardInterrupt, _Terminated):
        _stop(proc)
        raise
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the item's process group (its run subprocesses too), SIGKILL after 60 s; a second
    Ctrl-C or SIGTERM meanwhile does not cut this short."""
    held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        for sig, wait in ((signal.SIGTERM, 60.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """List the items (``--estimate``: with their own estimates) or ``--run`` them."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.remaining", description=__doc__.split("\n\n")[0])
    ap.add_argument("--estimate", action="store_true", help="add each item's estimate (runs its --plan)")
    ap.add_argument("--run", action="store_true", help="run the items in order (each resumes)")
    ap.add_argument("--minutes", type=float, default=110.0,
                    help="with --run: stop the item in flight and exit after this many minutes (0: no limit)")
    args = ap.parse_args(argv)
    if args.run:
        try:
            return run_items(args.minutes)
        except (KeyboardInterrupt, _Terminated) as e:
            print(f"{type(e).__name__} {e}: the item in flight was stopped (it resumes: run the same command again)")
            return 130 if isinstance(e, KeyboardInterrupt) else 143
    print("\n".join(listing(items(), args.estimate)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
