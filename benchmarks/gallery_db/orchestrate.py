"""Running the phases in order, each in a child, the JSON saved after each; resuming with ``--reuse``.

A phase is skipped under ``--reuse`` when the JSON holds its result (made with the same
settings) and what it left on disk for later phases is still there (the data, a store); a phase
that runs again invalidates the recorded results of the phases that depend on it.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from benchmarks import _common as C
from benchmarks.gallery_db import harness
from benchmarks.gallery_db.phases import Context, all_phases


def artifact_present(ctx: Context, name: str) -> bool:
    """Whether what phase ``name`` leaves for later phases is on disk (True for phases that leave nothing)."""
    if name == "data":
        return (ctx.work / "data" / "spec.json").is_file()
    store, _, step = name.partition("_")
    if store in ("faiss", "milvus") and step in ("build", "add", "remove"):
        stage = {"build": "build", "add": "added", "remove": "removed"}[step]
        loc = ctx.store(store).location(ctx.work, stage)
        return loc.exists() and (step != "add" or (ctx.work / store / "added_ids.npz").is_file())
    return True


def dependents(name: str) -> set[str]:
    """Every phase that needs ``name``, directly or through others."""
    phases, out, todo = all_phases(), set(), [name]
    while todo:
        cur = todo.pop()
        for other, (_, needs) in phases.items():
            if cur in needs and other not in out:
                out.add(other)
                todo.append(other)
    return out


def _start(args: argparse.Namespace, settings: dict[str, Any], out: Path, argv: list[str]) -> dict[str, Any]:
    """The result to fill: the JSON's under ``--reuse`` (its settings must match), else a fresh one."""
    if args.reuse and out.is_file():
        old = json.loads(out.read_text())
        prev = old.get("settings", {})
        diff = sorted(k for k in {*settings, *prev} if settings.get(k) != prev.get(k))
        if set(diff) - {"milvus_budget_s"}:
            raise SystemExit(f"{out}: made with other settings ({', '.join(diff)} differ); run without --reuse, "
                             "or with the same flags as before")
        if diff:  # another Milvus budget: its size is chosen again, and its phases re-run
            for gone in {"milvus_probe", *dependents("milvus_probe")}:
                old["phases"].pop(gone, None)
            old["settings"] = settings
        old.setdefault("commands", [old["command"]]).append(C.command_line(Path(__file__).with_name("run.py"), argv))
        return old
    from benchmarks.gallery_db.run import versions

    import faiss

    machine = {**C.machine_info(("numpy", "faiss", "pymilvus")), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
               "faiss_threads": faiss.omp_get_max_threads()}
    command = C.command_line(Path(__file__).with_name("run.py"), argv)
    return {"command": command, "commands": [command], "started": C.now_utc(),
            "git_commit": C.git_commit(), "machine": machine, "versions": versions(), "settings": settings,
            "phases": {}, "status": "partial"}


def _save(result: dict[str, Any], out: Path) -> None:
    """Write ``result`` with its status: complete when every phase of the benchmark is in it."""
    from benchmarks.gallery_db.render import summary

    result["date"] = C.now_utc()
    result["phases_pending"] = [p for p in all_phases() if p not in result["phases"]]
    result["status"] = "complete" if not result["phases_pending"] else "partial"
    result["summary"] = summary(result)
    C.write_json(out, result)


def _order(wanted: list[str]) -> list[str]:
    """``wanted`` and everything they need, in running order."""
    phases, need, todo = all_phases(), set(), list(wanted)
    while todo:
        cur = todo.pop()
        if cur not in phases:
            raise SystemExit(f"unknown phase {cur!r}: expected one of {', '.join(phases)}")
        if cur not in need:
            need.add(cur)
            todo.extend(phases[cur][1])
    return [p for p in phases if p in need]


def run_phases(args: argparse.Namespace, settings: dict[str, Any], out: Path, argv: list[str]) -> dict[str, Any]:
    """Run every phase (or ``--phases`` and what they need) not already done; the result as saved."""
    result = _start(args, settings, out, argv)
    for name in args.redo:
        for gone in {name, *dependents(name)}:
            result["phases"].pop(gone, None)
    wanted = list(args.phases or all_phases())
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    run_py = Path(__file__).with_name("run.py")
    env = C.child_env()
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for name in _order(wanted):
        ctx = Context(work, settings, result["phases"])
        if name in result["phases"] and artifact_present(ctx, name):
            print(f"== {name}: reused", flush=True)
            continue
        for dep in dependents(name):
            result["phases"].pop(dep, None)  # made from what this phase is about to replace
        C.write_json(work / "context.json", {"settings": settings, "results": result["phases"],
                                              "stopped": result.get("stopped", [])})
        print(f"== {name}", flush=True)
        argv_child = C.child_command(run_py, "--work", str(work), "--phase", name)
        try:
            result["phases"][name] = harness.run_child(argv_child, env, work / "phases" / f"{name}.json")
        except harness.PhaseFailed as exc:  # said in the JSON too: how long it ran, how much memory it held
            result.setdefault("stopped", []).append({"phase": name, **exc.record, "at": C.now_utc()})
            _save(result, out)
            raise
        _save(result, out)
    _save(result, out)
    return result
