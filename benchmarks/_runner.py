"""One benchmark run in a run folder of its own: read back, refused, or run in a measured worker process.

The harnesses' ``run_one`` (``benchmarks.cub100.run``, ``benchmarks.datasets.run``) are callers of
:func:`run_in_folder`. A run folder holds ``spec.json`` (what the worker runs), ``stdout.log`` (its
output), ``result.json`` (its numbers, then the measured fields) and ``boxes.json`` (OPA boxes,
shared through the cache folder). Resume rule: a ``result.json`` with the measured fields is a
finished run and is read back; a folder whose ``spec.json`` records other settings is refused.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import _common as C
from benchmarks._rows import boxes_key

# What the runner adds to a worker's result.json (run_measured's fields less the exit code, which is 0).
MEASURED = ("wall_seconds", "peak_rss_mb", "loadavg_1m", "commit", "git_dirty")


def run_in_folder(worker: str | Path, spec: dict[str, Any], cache: Path,
                  settings: Callable[[list[str]], list[str]], done_key: str = "wall_seconds",
                  log: Callable[..., None] = print) -> dict[str, Any]:
    """Run ``spec`` in ``spec["out"]`` through ``python -m <worker> --worker SPEC``, or read back its result.

    Adds the measured fields (:data:`MEASURED`, by :func:`benchmarks._common.run_measured`: wall
    time, the worker's peak resident memory, the load average at start and end, the commit and
    ``git_dirty`` at the start) to the worker's ``result.json``. The worker runs with ``spec["threads"]``
    OpenMP/MKL threads and offline from the Hugging Face Hub.

    Args:
        worker: the harness's module file; its ``--worker SPEC`` option runs one spec.
        spec: written as the folder's ``spec.json``; needs ``name``, ``overrides``, ``out`` and ``threads``.
        cache: the folder of the shared OPA boxes files (:func:`benchmarks._rows.boxes_key`).
        settings: the part of a run's overrides that must match the folder's ``spec.json`` (places,
            thread counts and the like left out).
        done_key: the field of ``result.json`` that marks a finished run (a measured one: the worker's
            own ``result.json`` lacks it until the runner adds it).
        log: progress lines (``print``'s signature).

    Returns:
        The run's result, as in its ``result.json``.

    Raises:
        RuntimeError: the folder holds a run of other settings, or the worker failed (with the
            log's tail).
    """
    name, overrides, threads = spec["name"], spec["overrides"], int(spec["threads"])
    out = Path(spec["out"])
    res_path, spec_path, log_path = out / "result.json", out / "spec.json", out / "stdout.log"
    if spec_path.is_file():
        recorded = json.loads(spec_path.read_text()).get("overrides") or []
        if settings(recorded) != settings(overrides):
            # A folder name does not carry every setting (e.g. a backbone's adapter settings): never
            # reuse, or overwrite, a run of other settings.
            raise RuntimeError(f"{out} holds a run of {name} with other settings ({spec_path}); use another "
                               "--work-dir, or delete that folder to run it again")
    if res_path.is_file():
        res = json.loads(res_path.read_text())
        if done_key in res:
            log(f"  [done] {name} ({out.name})", flush=True)
            return res
    out.mkdir(parents=True, exist_ok=True)
    # Share the OPA boxes between runs: the loader checks their metadata, so a mismatch is recomputed.
    shared, boxes = cache / boxes_key(overrides), out / "boxes.json"
    if shared.is_file() and not boxes.is_file():
        _copy(shared, boxes)
    C.write_json(spec_path, spec)
    env = C.child_env(dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                           HF_HUB_OFFLINE="1"))
    # The worker is the harness's module again (-m), from any working folder.
    m = C.run_measured(C.child_command(worker, "--worker", str(spec_path)), log_path, env)
    if m["exit_code"] != 0 or not res_path.is_file():
        tail = log_path.read_text()[-2000:]
        raise RuntimeError(f"run {name} failed (exit {m['exit_code']}); log {log_path}:\n{tail}")
    if boxes.is_file() and not shared.is_file():
        _copy(boxes, shared)
    res = json.loads(res_path.read_text())
    res.update({k: m[k] for k in MEASURED})
    C.write_json(res_path, res)
    r = res.get("metrics") or {}
    log(f"  {name} ({out.name}): R@1 {100 * r.get('recall@1', float('nan')):.2f} MAP@R "
        f"{100 * r.get('map@r', float('nan')):.2f} wall {res['wall_seconds']:.0f}s rss {res['peak_rss_mb']:.0f}MB",
        flush=True)
    return res


def _copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically (another run may read ``dst`` while it is written); makes its folder."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
