"""Small shared helpers: atomic writes, file identity, seeding, device choice."""
from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
import torch

T = TypeVar("T")
R = TypeVar("R")


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file; a truncated or foreign file is a ``ValueError`` that names it."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not a valid {what} (truncated or not JSON: {exc}); "
                         "delete it and re-run the command that wrote it") from None


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """Open a binary file that replaces ``path`` atomically when the ``with`` block ends.

    The data goes to a hidden ``.NAME.XXXXXXXX.tmp`` beside ``path``, is fsynced, and is renamed
    over ``path`` only if the block exits normally; on an exception the temporary file is
    removed. A process killed mid-write leaves the temporary file (readers never see it).
    The file gets the mode of any newly created file (0644 under umask 022).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            # Not tempfile.mkstemp: that creates the file 0600, and os.replace keeps the mode,
            # so every output would be private. O_EXCL with 0o666 lets the umask decide.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file.

    The file gets the mode of any newly created file (0644 under umask 022), see
    :func:`atomic_writer`.
    """
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (computed once per process while its size and time are unchanged)."""
    p = Path(path).resolve()
    st = p.stat()
    return _sha256(str(p), st.st_size, st.st_mtime_ns)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda[:N]`` or ``mps``; a clear error otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA device is available here (use cpu or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: MPS is not available here (use cpu or auto)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    return dev


def prefetch_map(fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
    """``fn(item)`` for each item in order, the next one computed in a background thread.

    For decoding images while a model runs in the caller's thread: PIL's decode and resize
    and torch's tensor ops release the GIL, so the two overlap on a CPU without the copies and
    the extra core contention of a worker process (``dva embed`` on 2 idle cores, 512 cub100
    photos: 176 img/s with this vs 152 with one DataLoader worker process; docs/BENCHMARKS.md,
    Embedding speed). An exception in ``fn`` is raised here, in order.
    """
    from concurrent.futures import ThreadPoolExecutor

    if not items:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="dva-prefetch") as pool:
        nxt = pool.submit(fn, items[0])
        for i in range(len(items)):
            cur = nxt.result()
            if i + 1 < len(items):
                nxt = pool.submit(fn, items[i + 1])
            yield cur
