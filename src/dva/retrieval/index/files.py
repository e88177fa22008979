"""The files of an index directory, and committing a build so that no reader ever fails.

Layout of an index directory ``INDEX``::

    INDEX/index.json                 the pointer: the index's description, the names and SHA-256
                                     of the current build's two files, its own checksum
    INDEX/index-<build>.faiss        the FAISS index of one build (vectors under their stable ids)
    INDEX/index-<build>.items.sqlite its items table: id, path, label, extra columns
                                     (:mod:`dva.retrieval.index.items`)

Format ``dva-index/3`` (this one) gives every item a stable int64 id, never reused: the pointer
records ``next_id`` (the id the next added item gets) and the extra ``columns``. Formats 1 and 2
(ids = rows; paths and labels in JSON, ``index-<build>.items.json`` for 2) are still read, and an
add or remove writes their next build in format 3.

A build's files are written under fresh names (never modified afterwards), then ``index.json``
is atomically replaced: that rename is the commit. A reader reads the pointer, then opens the
files it names; so that a commit in between cannot pull them away, a build is *retired*, not
deleted, when a newer one is committed, and its files are removed by a later commit once
``RETIRED_GRACE_S`` have passed (and never by the commit that retired it). A reader that still
finds its build gone re-reads the pointer once (:class:`BuildVanished`). Commits of one
directory are serialised by a lock on the directory, so a build's leftover temporary files
(``.index*.tmp``, from a killed build) are known to be stale and are removed by the next one.

Every file is checked on load (the pointer by its own checksum, the build files by theirs): a
damaged index is refused, never read as other vectors or other paths.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dva.retrieval.index.items import ItemTable, check_columns, write_table
from dva.retrieval.store.gallery import pairs_digest
from dva.utils import atomic_write_json, atomic_writer, read_json

FORMAT = "dva-index/3"
FORMAT_2 = "dva-index/2"  # items in JSON, ids = rows: still read
OLD_FORMAT = "dva-index/1"  # one index.json with the paths inside, no checksums: still read
POINTER = "index.json"
RETIRED_GRACE_S = 60.0  # a retired build's files outlive its retirement by at least this long
_FAISS, _ITEMS, _ITEMS_2 = ".faiss", ".items.sqlite", ".items.json"
_BUILD_SUFFIXES = (_FAISS, _ITEMS, _ITEMS_2)
_DESCRIBED = {"kind": str, "fingerprint": str, "dim": int, "count": int, "params": dict, "faiss_file": str}
_REQUIRED = {**_DESCRIBED, "build": str, "faiss_sha256": str, "items_file": str, "items_sha256": str,
             "retired": list}
_REQUIRED_3 = {**_REQUIRED, "next_id": int, "columns": list}
REBUILD_HINT = "rebuild it with `dva index --embeddings DIR --out INDEX --overwrite`"


class BuildVanished(FileNotFoundError):
    """A file named by ``index.json`` is gone: a newer build was committed and this one retired."""


def _faiss() -> Any:
    import faiss

    return faiss


def new_build_id() -> str:
    """A fresh build id: sortable by time, unique by a random suffix."""
    return f"{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}"


def build_files(build: str) -> tuple[str, str]:
    """The FAISS and items file names of build ``build``."""
    return f"index-{build}{_FAISS}", f"index-{build}{_ITEMS}"


def is_index_file(name: str) -> bool:
    """Whether ``name`` is a file an index build writes (pointer, build files, temporaries)."""
    return (name == POINTER or name.startswith(".index")
            or (name.startswith("index-") and name.endswith(_BUILD_SUFFIXES)))


def _checksum(record: dict) -> str:
    """SHA-256 of the pointer's content, its own ``checksum`` field aside (formatting ignored)."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def items_digest(paths: Sequence[str], labels: Sequence[Any]) -> str:
    """SHA-256 of the ordered ``(path, label)`` pairs: what identifies an index's gallery."""
    return pairs_digest(paths, labels)


# --------------------------------------------------------------------------- reading
def read_pointer(d: Path) -> dict:
    """The checked content of ``d/index.json``.

    Raises:
        FileNotFoundError: no index.json (not an index).
        ValueError: not JSON, an unknown format, or content that fails its checksum.
    """
    path = d / POINTER
    if not path.exists():
        build = "build one with `dva index --embeddings DIR --out INDEX`"
        if not d.exists():
            raise FileNotFoundError(f"{d}: no such index folder; {build}")
        if (d / "meta.json").is_file() and (d / "inputs.jsonl").is_file():  # dva.retrieval.store.embeddings
            raise FileNotFoundError(f"{d}: an embeddings folder (`dva embed --out`), not an index; "
                                    f"build one from it with `dva index --embeddings {d} --out INDEX`")
        raise FileNotFoundError(f"{d}: not a dva index (no {POINTER}); {build}")
    rec = read_json(path, "index description")
    fmt = rec.get("format") if isinstance(rec, dict) else type(rec).__name__
    if fmt not in (FORMAT, FORMAT_2, OLD_FORMAT):
        raise ValueError(f"{path}: unknown format {fmt!r} (want {FORMAT}); {REBUILD_HINT}")
    if fmt == OLD_FORMAT:  # no checksum to check: only the shape of the record
        bad = [k for k, t in {**_DESCRIBED, "paths": list}.items() if not isinstance(rec.get(k), t)]
        if bad:
            raise ValueError(f"{path}: damaged (missing {', '.join(bad)}); {REBUILD_HINT}")
        return rec
    bad = [k for k, t in (_REQUIRED_3 if fmt == FORMAT else _REQUIRED).items() if not isinstance(rec.get(k), t)]
    if bad or rec.get("checksum") != _checksum(rec):
        raise ValueError(f"{path}: damaged ({'missing ' + ', '.join(bad) if bad else 'checksum mismatch'}); "
                         f"{REBUILD_HINT}")
    return rec


def _open_named(d: Path, pointer: dict, key: str) -> Any:
    """Open the build file ``pointer[key]``; its absence is :class:`BuildVanished`."""
    path = d / pointer[key]
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by the caller's ``with``
    except FileNotFoundError:
        raise BuildVanished(f"{path}: missing (named by {d / POINTER}); {REBUILD_HINT}") from None


def _verify(fh: Any, path: Path, expected: str | None) -> None:
    """Check the file's SHA-256 against the pointer's record (old-format indexes have none)."""
    if expected is None:
        return
    got = hashlib.file_digest(fh, "sha256").hexdigest()
    fh.seek(0)
    if got != expected:
        raise ValueError(f"{path}: damaged (its SHA-256 is not the one {POINTER} records); {REBUILD_HINT}")


def read_items(d: Path, pointer: dict) -> tuple[list, list]:
    """The gallery paths and labels per FAISS id of a format 1 or 2 build (JSON)."""
    if pointer["format"] == OLD_FORMAT:
        return list(pointer["paths"]), list(pointer.get("labels") or [None] * len(pointer["paths"]))
    path = d / pointer["items_file"]
    with _open_named(d, pointer, "items_file") as fh:
        _verify(fh, path, pointer["items_sha256"])
        data = fh.read()
    items = json.loads(data)  # checked bytes: this is what build_index wrote
    return list(items["paths"]), list(items["labels"])


def open_items(d: Path, pointer: dict) -> ItemTable:
    """The items table of the pointer's build: the checked SQLite file (format 3), opened for
    lazy reads, or the JSON items of formats 1 and 2 in an in-memory table (ids = rows)."""
    if pointer["format"] != FORMAT:
        return ItemTable.in_memory(*read_items(d, pointer))
    path = d / pointer["items_file"]
    with _open_named(d, pointer, "items_file") as fh:
        _verify(fh, path, pointer["items_sha256"])
        try:  # opened while the checked handle is held; the table's own descriptor outlives a retirement
            return ItemTable.open(path, check_columns(pointer["columns"], str(d / POINTER)))
        except FileNotFoundError:
            raise BuildVanished(f"{path}: missing (named by {d / POINTER}); {REBUILD_HINT}") from None


def read_faiss(d: Path, pointer: dict) -> Any:
    """The FAISS index of the pointer's build, read from an open handle (deletion-proof)."""
    faiss = _faiss()
    path = d / pointer["faiss_file"]
    with _open_named(d, pointer, "faiss_file") as fh:
        _verify(fh, path, pointer.get("faiss_sha256"))
        try:
            return faiss.read_index(faiss.PyCallbackIOReader(fh.read))
        except (RuntimeError, MemoryError) as exc:  # a C++ exception (bad_alloc when a damaged size
            # field asks for too much memory): only old-format files get here unchecked
            raise ValueError(f"{path}: cannot read the FAISS index ({str(exc).splitlines()[0]}); "
                             f"{REBUILD_HINT}") from None


# --------------------------------------------------------------------------- writing
def write_faiss(index: Any, path: Path) -> str:
    """Write ``index`` to ``path`` atomically; returns the file's SHA-256."""
    faiss = _faiss()
    h = hashlib.sha256()
    with atomic_writer(path) as f:
        def write(b: bytes) -> int:
            h.update(b)
            return f.write(b)

        faiss.write_index(index, faiss.PyCallbackIOWriter(write))
    return h.hexdigest()


def write_items(path: Path, ids: Sequence[int], paths: Sequence[str], labels: Sequence[Any],
                extras: Sequence[Mapping[str, Any]] | None = None, columns: Sequence[str] = (),
                base: Path | ItemTable | None = None, base_columns: Sequence[str] = (),
                delete: Sequence[int] = ()) -> str:
    """Write a build's items table to ``path`` atomically; returns the file's SHA-256.

    ``base``: the previous build's table (file or in-memory), copied first; the rows given
    are appended to it and the rows of ids ``delete`` deleted
    (see :func:`dva.retrieval.index.items.write_table`).
    """
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"  # a killed writer's leftover: .index*.tmp
    try:
        write_table(tmp, ids, paths, labels, extras, columns, base=base, base_columns=base_columns, delete=delete)
        with open(tmp, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest


@contextmanager
def writing(d: Path) -> Iterator[None]:
    """Hold the directory's commit lock; on entry, remove temporaries left by killed builds."""
    d.mkdir(parents=True, exist_ok=True)
    fd = _lock(d)
    try:
        # Under the lock no other build is writing here: every temporary is a dead one's. Without
        # a lock (no fcntl) another build may be writing one: leave them.
        for stale in d.glob(".index*.tmp") if fd is not None else ():
            stale.unlink(missing_ok=True)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the flock


def _lock(d: Path) -> int | None:
    """An exclusive flock on the directory itself (no lock file to leave behind); None without fcntl."""
    try:
        import fcntl
    except ImportError:  # not POSIX: builds of one directory must not overlap
        return None
    fd = os.open(d, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def commit(d: Path, record: dict) -> dict:
    """Point ``index.json`` at ``record``'s build (call inside :func:`writing`); returns the record.

    The build just replaced is retired, not deleted; retired builds older than
    ``RETIRED_GRACE_S`` and files of builds never committed (killed ones) are removed.
    """
    now = time.time()
    try:
        old = read_pointer(d)
    except (FileNotFoundError, ValueError):
        old = None  # none, or damaged: no reader can be using its build
    retired = []
    if old is not None:
        old_files = [old["faiss_file"]] + ([old["items_file"]] if "items_file" in old else [])
        retired.append({"build": old.get("build", old["faiss_file"]), "files": old_files, "since": now})
        retired += [r for r in old.get("retired", []) if now - float(r["since"]) < RETIRED_GRACE_S]
    record = {**record, "format": FORMAT, "retired": retired}
    record["checksum"] = _checksum(record)
    atomic_write_json(d / POINTER, record)  # the commit
    keep = {record["faiss_file"], record["items_file"]} | {f for r in retired for f in r["files"]}
    for f in d.iterdir():
        if f.name.startswith("index-") and f.name.endswith(_BUILD_SUFFIXES) and f.name not in keep:
            try:  # the commit is done: a file a reader still holds open (Windows) goes on the next commit
                f.unlink(missing_ok=True)
            except OSError:
                pass
    return record
