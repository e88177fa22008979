"""The run log: ``log.jsonl`` (one JSON object per line) plus a console line; rank 0 only.

Every row carries the ``run`` id of the run that wrote it (:func:`new_run_id`; a resumed run keeps
its id, saved in ``train_state.pt``), so rows of a failed or abandoned run in the same folder are
not mixed with a later one's (:func:`dva.retrieval.report.read_log` keeps the latest run's).
"""
from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


def new_run_id() -> str:
    """A sortable, unique id: UTC start time and 6 random hex digits, e.g. ``20251201T210455-3fa2c1``."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class RunLog:
    """Append rows to ``path``; print each (except its ``kind`` and ``run``) unless ``quiet``."""

    def __init__(self, path: Path, enabled: bool, quiet: bool = False, run_id: str = "") -> None:
        self.path, self.enabled, self.quiet = path, enabled, quiet
        self.run_id = run_id or new_run_id()

    def write(self, **row: Any) -> None:
        """Append one row (JSON-serialisable values)."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({**row, "run": self.run_id}) + "\n")
        if not self.quiet:
            keys = [k for k in row if k not in ("kind", "note")]
            tqdm.write(" ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keys))
            if row.get("note"):
                tqdm.write(f"  {row['note']}")

    def alert(self, message: str, **row: Any) -> None:
        """A row that must be seen: logged, and printed to stderr even when ``quiet``."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({**row, "message": message, "run": self.run_id}) + "\n")
        tqdm.write(f"dva train: {message}", file=sys.stderr)
