"""Each phase in a child process of its own: its wall time, its peak memory, its result saved when it ends.

The parent samples the resident memory of the child and of everything the child starts (Milvus
Lite runs its engine in a process of its own) every ``interval`` seconds with psutil: the peak of
that sum is the phase's ``peak_rss_bytes``. ``peak_anon_bytes`` leaves out file-backed pages
(RSS minus shared): a phase that reads a memory-mapped file counts the pages it touched in its
RSS although the kernel may drop them any time. The child adds its own ``ru_maxrss``
(``resource.getrusage``), exact for the Python process itself.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def tree_memory(pid: int) -> tuple[int, int]:
    """Resident and anonymous (resident - shared) bytes of process ``pid`` and all its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    rss = anon = 0
    for p in procs:
        try:
            mi = p.memory_info()
        except psutil.Error:
            continue  # ended between the listing and the read
        rss += mi.rss
        anon += mi.rss - getattr(mi, "shared", 0)
    return rss, anon


class PeakSampler(threading.Thread):
    """Samples :func:`tree_memory` of a process until :meth:`stop`; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_anon = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            rss, anon = tree_memory(self.pid)
            self.peak_rss, self.peak_anon = max(self.peak_rss, rss), max(self.peak_anon, anon)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._halt.set()
        self.join()


class PhaseFailed(RuntimeError):
    """A phase's child ended without a result; ``record``: its exit status, wall time and peak memory."""

    def __init__(self, message: str, record: dict[str, Any]) -> None:
        super().__init__(message)
        self.record = record


def run_child(argv: Sequence[str], env: dict[str, str], result_path: Path, interval: float = 0.1) -> dict[str, Any]:
    """Run ``argv`` (a phase's child), wait, and return its result file with wall time and memory added.

    The child's output goes to this process's stdout/stderr (so a ``nohup`` log shows its progress).

    Raises:
        RuntimeError: the child failed or wrote no result (its exit status and the result path named).
    """
    result_path.unlink(missing_ok=True)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen(list(argv), env=env)
    sampler = PeakSampler(proc.pid, interval)
    sampler.start()
    try:
        rc = proc.wait()
    finally:
        sampler.stop()
        if proc.poll() is None:  # interrupted: do not leave the child running
            proc.kill()
            proc.wait()
    wall = time.perf_counter() - t0
    if rc != 0 or not result_path.is_file():
        raise PhaseFailed(f"phase child {' '.join(argv[-4:])} exited with status {rc}"
                          + ("" if result_path.is_file() else f" and wrote no {result_path}")
                          + "; its output is above; fix it and re-run with --reuse to keep the finished phases",
                          {"returncode": rc, "running_s": wall, "rss_bytes": sampler.peak_rss,
                           "anon_bytes": sampler.peak_anon})
    out = json.loads(result_path.read_text())
    out.update({"wall_s": wall, "peak_rss_bytes": sampler.peak_rss, "peak_anon_bytes": sampler.peak_anon,
                "load_avg_start": list(load0), "load_avg_end": list(os.getloadavg())})
    return out


def own_memory() -> dict[str, int]:
    """This process's peak resident set (``ru_maxrss``) and that of its waited-for children, in bytes."""
    kb = 1024  # Linux reports kilobytes
    return {"ru_maxrss_self_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kb,
            "ru_maxrss_children_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kb}
