"""Changing a loaded index in place: add items, remove items, each committed as a new build.

(:meth:`GalleryIndex.add`/``remove`` call this module; :mod:`dva.retrieval.index.live` has the
directory-level functions. It does not import :mod:`~dva.retrieval.index.gallery_index`, which
imports it: the loaded index's own class reloads a directory.)

An add or remove changes the loaded FAISS index, then writes the next build (the whole
``.faiss`` file under a fresh name, and the items table: the previous build's table copied,
the change applied) and commits it (:func:`dva.retrieval.index.files.commit`, under the
directory's lock). Readers see the old build or the new one, never a mix; a process killed
while it writes leaves the previous build current (tests/retrieval/test_index_live.py).

Another writer may have committed since this object was loaded (a second ``dva index --add``,
the server adding an upload): under the lock the current build is compared with the loaded
one, and when they differ the current one is loaded first and the change applied on top, so
no writer's change is ever silently dropped.

Why a whole ``.faiss`` per change and not a base + delta segments layout: writing the file is
sequential I/O (a 1M x 768 IVF-PQ + fp16 index is ~1.6 GB: seconds), while a rebuild trains
k-means and re-encodes every vector. Measured on 200k x 768 synthetic vectors (IVF-PQ + fp16,
default parameters, 2 shared cores): rebuild 253 s; adding 20k (10 %) 8.7 s, 3.4 % of it (of
which encoding ~90 %, writing the build ~10 %), 3.7 % with the load; removing 2k ids 0.9 s.
The add costs ~ its share of the encoding plus one file write, so the ratio stays under the
10 % target as long as the rebuild's training outweighs ~9 file writes.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dva.retrieval.index import files
from dva.retrieval.index.common import FingerprintMismatchError, normalise
from dva.retrieval.index.items import ItemTable, check_columns
from dva.retrieval.store.gallery import Label

_SHOWN = 3  # offending paths/ids named in an error message
Loaded = Any  # a loaded GalleryIndex: not imported, gallery_index imports this module


def _faiss() -> Any:
    import faiss

    return faiss


def _checked_batch(gi: Loaded, vectors: np.ndarray, paths: Sequence[str], labels: Sequence[Label],
                   extra: Sequence[Mapping[str, Any]] | None, fingerprint: str | None) -> np.ndarray:
    """The batch's vectors normalised, after checking shapes, model and paths within the batch.

    Raises:
        FingerprintMismatchError: ``fingerprint`` is not the index's model.
        ValueError: mismatched lengths, another dimension, a path twice in the batch.
    """
    if fingerprint is not None and str(fingerprint) != gi.fingerprint:
        raise FingerprintMismatchError(
            f"index {gi.path} was built with model fingerprint {gi.fingerprint} but the vectors to add "
            f"were embedded by model {fingerprint}; embed them with the index's model (the same "
            "checkpoint), or rebuild the index with this model")
    x = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if x.shape[1] != gi.dim:
        raise ValueError(f"vectors of dimension {x.shape[1]} cannot go into index {gi.path} of dimension {gi.dim}")
    n = len(x)
    if not len(paths) == len(labels) == n or (extra is not None and len(extra) != n):
        raise ValueError(f"add: {n} vectors, {len(paths)} paths, {len(labels)} labels"
                         + (f", {len(extra)} extra rows" if extra is not None else "") + "; give one of each per vector")
    seen: set[str] = set()
    twice = [p for p in map(str, paths) if p in seen or seen.add(p)]  # type: ignore[func-returns-value]
    if twice:
        raise ValueError(f"add: {', '.join(twice[:_SHOWN])} given more than once; give each image once")
    return normalise(x)


def _new_columns(gi: Loaded, extra: Sequence[Mapping[str, Any]] | None,
                 columns: Sequence[str] | None) -> tuple[str, ...]:
    """The index's extra columns after the add: the present ones, then new ones in order."""
    have = list(gi.table.extra_columns)
    order = list(columns or ())
    for row in extra or ():
        order += [c for c in row if c not in order]
    new = [c for c in order if c not in have]
    return check_columns(have + new, "add: the extra metadata columns")


def add_items(gi: Loaded, vectors: np.ndarray, paths: Sequence[str], labels: Sequence[Label],
              extra: Sequence[Mapping[str, Any]] | None = None, *, columns: Sequence[str] | None = None,
              fingerprint: str | None = None) -> np.ndarray:
    """Add L2-normalised ``vectors`` with their items to ``gi`` and commit the new build.

    All or nothing: a path already in the gallery is refused (naming it) rather than skipped,
    so that an add never half-happens and ids map one to one to what was given. Extra columns
    not yet in the index are added to it (older items get NULL there).

    Returns:
        The new items' ids (int64, consecutive from the index's ``next_id``).

    Raises:
        FingerprintMismatchError, ValueError: see :func:`_checked_batch`; a path already indexed.
    """
    x = _checked_batch(gi, vectors, paths, labels, extra, fingerprint)
    if len(x) == 0:
        return np.zeros(0, np.int64)
    d = _directory(gi)
    with gi.lock.exclusive(), files.writing(d):
        _catch_up(gi, d)
        cols = _new_columns(gi, extra, columns)
        present = gi.table.ids_of_paths(paths)
        if present:
            shown = ", ".join(f"{p} (id {i})" for p, i in list(present.items())[:_SHOWN])
            raise ValueError(f"index {d} already holds {len(present)} of these images: {shown}"
                             f"{' ...' if len(present) > _SHOWN else ''}; leave them out, or remove them first "
                             "(`dva index --remove IDS --out INDEX`)")
        ids = np.arange(gi.next_id, gi.next_id + len(x), dtype=np.int64)
        _with_id_map(gi)
        _faiss_add(gi, x, ids)
        items = {"ids": ids, "paths": [str(p) for p in paths], "labels": list(labels), "extras": extra,
                 "columns": cols}
        _commit(gi, d, items, {"count": len(gi) + len(ids), "next_id": int(ids[-1]) + 1, "columns": list(cols),
                               "last_change": {"op": "add", "count": len(ids)}})
    return ids


def remove_items(gi: Loaded, ids: Sequence[int]) -> int:
    """Remove the items ``ids`` from ``gi`` and commit the new build; how many were present.

    Ids not in the gallery are ignored (a repeated remove is harmless); when none is present
    nothing is written.
    """
    want = np.unique(np.asarray(list(ids), dtype=np.int64))
    if len(want) == 0:
        return 0
    d = _directory(gi)
    with gi.lock.exclusive(), files.writing(d):
        _catch_up(gi, d)
        present = np.intersect1d(want, gi.table.ids_of(want))
        if len(present) == 0:
            return 0
        _with_id_map(gi)
        faiss = _faiss()
        # IndexRefine cannot remove: the ids leave its IVF lists (never candidates again); their
        # re-ranking rows stay in the store, dead, until a rebuild (see gallery_index's docstring).
        target = faiss.downcast_index(gi.index).base_index if gi.refined else gi.index
        removed = target.remove_ids(faiss.IDSelectorBatch(present))
        if removed != len(present):
            raise RuntimeError(f"index {d}: FAISS removed {removed} of {len(present)} ids present in its items "
                               f"table; {files.REBUILD_HINT}")
        items = {"ids": [], "paths": [], "labels": [], "extras": None, "columns": gi.table.extra_columns,
                 "delete": present}
        _commit(gi, d, items, {"count": len(gi) - len(present), "next_id": gi.next_id,
                               "columns": list(gi.table.extra_columns),
                               "last_change": {"op": "remove", "count": len(present)}})
    return int(len(present))


def _directory(gi: Loaded) -> Path:
    if gi.path is None:
        raise ValueError("this index was not loaded from a directory: build it with `dva index` first")
    return Path(gi.path)


def _catch_up(gi: Loaded, d: Path) -> None:
    """Load the directory's current build into ``gi`` when another writer committed since it was loaded."""
    current = files.read_pointer(d)
    if current["faiss_file"] != gi.meta["faiss_file"]:
        gi.adopt(type(gi)._open(d))


def _with_id_map(gi: Loaded) -> None:
    """Wrap a plain ``IndexFlatIP`` (formats 1/2; ids = rows) in an ``IndexIDMap2`` with those ids."""
    faiss = _faiss()
    if gi.meta["kind"] != "flat" or isinstance(faiss.downcast_index(gi.index), faiss.IndexIDMap2):
        return
    flat = faiss.IndexFlatIP(gi.dim)
    mapped = faiss.IndexIDMap2(flat)
    mapped.own_fields = True  # the map owns the flat index: it lives as long as the map
    flat.this.disown()
    n = gi.index.ntotal
    if n:
        # np.asarray: under faiss.contrib.torch_utils, reconstruct_n returns a torch tensor
        mapped.add_with_ids(np.ascontiguousarray(np.asarray(gi.index.reconstruct_n(0, n)), dtype=np.float32),
                            np.arange(n, dtype=np.int64))
    gi.index = mapped


def _faiss_add(gi: Loaded, x: np.ndarray, ids: np.ndarray) -> None:
    """Add ``x`` under ``ids`` (the next ids) to the loaded FAISS index."""
    faiss = _faiss()
    if not gi.refined:
        gi.index.add_with_ids(x, ids)  # IDMap2 (flat) and IVF-PQ keep ids natively
        return
    refine = faiss.downcast_index(gi.index)
    store = refine.refine_index
    if store.ntotal != ids[0]:  # the store's row of an id is the id: rows must be consecutive
        raise RuntimeError(f"index {gi.path}: its re-ranking store holds {store.ntotal} rows but the next id is "
                           f"{ids[0]}; {files.REBUILD_HINT}")
    refine.base_index.add_with_ids(x, ids)
    store.add(x)
    refine.ntotal = store.ntotal


def _commit(gi: Loaded, d: Path, items: dict, changes: dict) -> None:
    """Write the next build of ``gi`` (FAISS + items table), commit it, and point ``gi`` at it.

    On any failure the files of the unfinished build are removed and ``gi`` is reloaded from the
    directory, so that its in-memory index never runs ahead of what was committed.
    """
    build = files.new_build_id()
    faiss_name, items_name = files.build_files(build)
    base: Path | ItemTable = gi.table if gi.meta["format"] != files.FORMAT else d / gi.meta["items_file"]
    try:
        faiss_sha = files.write_faiss(gi.index, d / faiss_name)
        items_sha = files.write_items(d / items_name, items["ids"], items["paths"], items["labels"],
                                      items["extras"], items["columns"], base=base,
                                      base_columns=gi.table.extra_columns, delete=items.get("delete", ()))
        keep = {k: v for k, v in gi.meta.items() if k not in ("checksum", "retired", "format", "paths", "labels")}
        record = files.commit(d, {**keep, **changes, "build": build, "faiss_file": faiss_name,
                                  "faiss_sha256": faiss_sha, "items_file": items_name, "items_sha256": items_sha,
                                  "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
    except BaseException:
        for name in (faiss_name, items_name):
            (d / name).unlink(missing_ok=True)  # never committed: nobody reads them
        try:
            gi.adopt(type(gi)._open(d))  # drop the uncommitted change from memory
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
        raise
    gi.meta = record
    gi.table = ItemTable.open(d / items_name, items["columns"])


