"""The phases of the benchmark: each runs in a child process of its own and returns its numbers.

Order (``run.py`` runs them; ``--reuse`` skips the finished ones)::

    data, truth                      synthetic vectors on disk; exact (filtered) top-10 references
    faiss_build                      IVF-PQ + fp16 re-rank over the first n rows (build_index)
    faiss_search, faiss_filter       batch q/s and recall@10 at several nprobe / k_factor, unfiltered
                                     and at 50% / 10% / 1% filters, on the fresh build
    faiss_add, faiss_remove          add n_add rows, then remove n_remove ids (each on a copy)
    faiss_after                      search and filtered search of the gallery after both
    milvus_probe                     Milvus Lite insert rate on a small gallery -> the size it can do
    milvus_build ... milvus_after    the same phases on Milvus Lite at that size
    real                             a real embedded gallery (cub100), filtered by label, both stores

Store ids and data rows: see :class:`benchmarks.gallery_db.measure.IdMap`.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gallery_db import exact
from benchmarks.gallery_db.data import FILTERS, Data, DataSpec, generate, removed_rows, selectivities
from benchmarks.gallery_db.measure import IdMap, measure_search
from benchmarks.gallery_db.stores import copy_store, disk_bytes, remove_store, store

K = 10


@dataclass
class Context:
    """What a phase knows: the work folder, the run's settings and the finished phases' results."""

    work: Path
    settings: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)
    stopped: list[dict[str, Any]] = field(default_factory=list)  # phases stopped before they ended (run.py)

    @cached_property
    def data(self) -> Data:
        """The synthetic data (memory-mapped)."""
        return Data(self.work / "data")

    @property
    def spec(self) -> DataSpec:
        """The data settings."""
        return DataSpec(**self.settings["data"])

    def sizes(self, name: str) -> tuple[int, int, int]:
        """(first build, rows added, ids removed) of store ``name``: Milvus at the size its probe chose."""
        s = self.spec
        if name == "faiss":
            return s.n, s.n_add, s.n_remove
        n = int(self.results["milvus_probe"]["chosen_n"])
        return n, round(n * s.n_add / s.n), round(n * s.n_remove / s.n)

    def store(self, name: str) -> Any:
        """The store's driver (:mod:`benchmarks.gallery_db.stores`)."""
        return store(name, **self.settings.get("faiss_params", {}))


# ----------------------------------------------------------------------------- references
def alive(data: Data, n_b: int, n_a: int = 0, removed: np.ndarray | None = None) -> np.ndarray:
    """The rows in a gallery built from rows ``[0, n_b)``, given rows ``[n, n + n_a)``, less ``removed``."""
    m = np.zeros(data.total, bool)
    m[:n_b] = True
    m[data.spec.n:data.spec.n + n_a] = True
    if removed is not None:
        m[removed] = False
    return m


def removed_of(data: Data, n_b: int, n_a: int, n_r: int) -> np.ndarray:
    """The rows removed from a gallery of ``n_b`` + ``n_a`` rows (seeded: the same in every phase)."""
    return removed_rows(alive(data, n_b, n_a), n_r, data.spec.seed)


def states(data: Data, n_b: int, n_a: int, n_r: int) -> dict[str, np.ndarray]:
    """The two galleries a store searches: after its build (``base``) and after add + remove (``after``)."""
    return {f"n{n_b}_base": alive(data, n_b),
            f"n{n_b}_a{n_a}_r{n_r}": alive(data, n_b, n_a, removed_of(data, n_b, n_a, n_r))}


def truths(ctx: Context, galleries: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """The exact top-10 rows of every gallery, unfiltered (``all``) and per filter; cached under WORK/truth."""
    d, data = ctx.work / "truth", ctx.data
    missing = {key: m for key, m in galleries.items() if not (d / f"{key}.npz").is_file()}
    if missing:
        views = {f"{key}/{f}": m if f == "all" else m & data.mask(f)
                 for key, m in missing.items() for f in ("all", *FILTERS)}
        found = exact.exact_topk(data.vectors, data.queries, K, views)
        for key in missing:
            exact.save(d / f"{key}.npz", {f: found[f"{key}/{f}"] for f in ("all", *FILTERS)})
    return {key: exact.load(d / f"{key}.npz") for key in galleries}


def _truth(ctx: Context, name: str, after: bool) -> dict[str, np.ndarray]:
    keyed = states(ctx.data, *ctx.sizes(name))
    key = list(keyed)[1 if after else 0]
    return truths(ctx, {key: keyed[key]})[key]


# ----------------------------------------------------------------------------- data and truth
def phase_data(ctx: Context) -> dict[str, Any]:
    """Generate the synthetic gallery (skipped when WORK/data holds this spec already)."""
    t0 = time.perf_counter()
    generate(ctx.spec, ctx.work / "data")
    data = ctx.data
    out = {"seconds": time.perf_counter() - t0, "rows": data.total, "dim": data.spec.dim,
           "queries": len(data.queries), "vectors_bytes": disk_bytes(data.folder / "vectors.npy"),
           "selectivity": selectivities(data.columns, slice(0, data.spec.n))}
    if ctx.settings.get("baseline", True):
        out["import_memory"] = import_memory()
    return out


def import_memory() -> dict[str, int]:
    """Resident and anonymous bytes of a fresh process after importing both stores (the floor of every phase)."""
    import subprocess
    import sys

    code = ("import os, dva.retrieval.index, dva.retrieval.milvus; "
            "from benchmarks.gallery_db.harness import tree_memory; print(*tree_memory(os.getpid()))")
    from benchmarks import _common as C

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=C.child_env(), check=True)
    rss, anon = map(int, out.stdout.split())
    return {"rss_bytes": rss, "anon_bytes": anon}


def phase_truth(ctx: Context) -> dict[str, Any]:
    """Exact top-10 of the FAISS galleries (base, after add + remove), unfiltered and filtered, in one pass."""
    t0 = time.perf_counter()
    keyed = states(ctx.data, *ctx.sizes("faiss"))
    truths(ctx, keyed)
    return {"seconds": time.perf_counter() - t0, "galleries": {k: int(m.sum()) for k, m in keyed.items()}}


# ----------------------------------------------------------------------------- one store
def phase_build(ctx: Context, name: str) -> dict[str, Any]:
    """Build the store over rows ``[0, n_b)``: time (the build call, data already on disk), size, parameters."""
    ops, (n_b, _, _) = ctx.store(name), ctx.sizes(name)
    es = ctx.data.embeddings(0, n_b)
    loc = ops.location(ctx.work, "build")
    remove_store(loc)  # a previous run's build would linger beside this one (FAISS keeps old builds for readers)
    t0 = time.perf_counter()
    gallery = ops.build(es, loc)
    build_s = time.perf_counter() - t0
    settle_s = ops.settle(gallery)
    t0 = time.perf_counter()
    ids = np.asarray(gallery.ids())
    ids_s = time.perf_counter() - t0
    if not np.array_equal(ids, np.arange(n_b)):
        raise RuntimeError(f"{name}: a fresh build of {n_b} rows gave ids {ids[:3]}...{ids[-3:]}, not 0..{n_b - 1}")
    return {"store": name, "n": n_b, "build_s": build_s, "index_wait_s": settle_s, "ids_s": ids_s,
            "count": len(gallery), "disk_bytes": disk_bytes(loc),
            **ops.describe(gallery)}


def _grid(ctx: Context, name: str, gallery: Any, filtered: bool) -> list[dict[str, Any]]:
    """The search settings to measure, around each store's defaults.

    FAISS: nprobe x k_factor unfiltered; nprobe alone filtered (a filtered search visits
    ``nprobe / fraction kept`` lists, capped at nlist: :meth:`dva.retrieval.index.GalleryIndex.search`).
    Milvus: the HNSW search breadth ``ef``.
    """
    if name != "faiss":
        ef = int(gallery.ef)
        efs = (ef, 4 * ef) if filtered else (ef // 2, ef, 2 * ef)
        return [{"ef": e, "default": e == ef} for e in efs]
    p = gallery.meta["params"]
    nprobe, kf, nlist = p["nprobe"], p.get("k_factor", 8), p["nlist"]
    probes = {min(nlist, max(1, round(nprobe * f))) for f in (0.125, 0.25, 0.5, 1, 2)}
    if filtered:  # nprobe at the default k_factor; more re-ranked candidates at the default nprobe
        grid = {(a, kf) for a in probes} | {(nprobe, 2 * kf), (nprobe, 4 * kf)}
    else:
        grid = {(a, k) for a in probes for k in (kf // 2, kf, 2 * kf)}
    return [{"nprobe": a, "k_factor": b, "default": (a, b) == (nprobe, kf)} for a, b in sorted(grid)]


def _search_rows(ctx: Context, name: str, gallery: Any, idmap: IdMap, ref: dict[str, np.ndarray],
                 filters: tuple[str | None, ...], grid: list[dict[str, Any]], single: bool = True
                 ) -> list[dict[str, Any]]:
    ops, q, rows = ctx.store(name), ctx.data.queries, []
    for f in filters:
        for setting in grid:
            ops.tune(gallery, **{k: v for k, v in setting.items() if k not in ("default", "nprobe_visited")})
            m = measure_search(gallery, q, ref[f or "all"], idmap, k=K, where=FILTERS[f] if f else None,
                               repeats=ctx.settings["repeats"],
                               single=ctx.settings["single"] if setting["default"] and single else 0)
            rows.append({"filter": f or "none", "where": FILTERS[f] if f else None, **setting, **m})
            shown = ", ".join(f"{k}={v}" for k, v in setting.items() if k not in ("default", "nprobe_visited"))
            print(f"[{name}] filter {f or 'none':>4} {shown:<24} {m['qps_batch']:9.1f} q/s  "
                  f"recall@10 {m['recall@10']:.3f}", flush=True)
    default = next(s for s in grid if s["default"])
    ops.tune(gallery, **{k: v for k, v in default.items() if k not in ("default", "nprobe_visited")})
    return rows


def _open(ctx: Context, name: str, stage: str) -> tuple[Any, float]:
    t0 = time.perf_counter()
    gallery = ctx.store(name).open(ctx.store(name).location(ctx.work, stage))
    return gallery, time.perf_counter() - t0


def phase_search(ctx: Context, name: str) -> dict[str, Any]:
    """Unfiltered batch search of the fresh build: q/s and recall@10 over the settings grid."""
    gallery, open_s = _open(ctx, name, "build")
    ref = _truth(ctx, name, after=False)
    rows = _search_rows(ctx, name, gallery, IdMap(len(gallery)), ref, (None,), _grid(ctx, name, gallery, False))
    return {"store": name, "n": len(gallery), "open_s": open_s, "rows": rows}


class ForcedIVF:
    """A FAISS gallery searched through its IVF path whatever the filter keeps (the store itself scores a
    small filtered set exactly instead): shows what that exact scan is for."""

    path = "ivf (forced)"

    def __init__(self, gallery: Any) -> None:
        self.gallery = gallery

    def __getattr__(self, attr: str) -> Any:  # set_nprobe, meta, ...: the gallery's own
        return getattr(self.gallery, attr)

    def search(self, queries: np.ndarray, k: int, where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        from dva.retrieval.index.gallery_index import normalise, numpy_search

        params, keep = self.gallery._filtered_params(self.gallery.select(where))  # keep: what params point into
        out = numpy_search(self.gallery.index, normalise(queries), k, params=params)
        del keep
        return out


class ForcedHNSW(ForcedIVF):
    """A Milvus gallery searched through its HNSW index whatever the filter keeps (the store itself scores
    a small filtered set exactly instead): the same call the store makes for a larger filtered set."""

    path = "hnsw (forced)"

    def search(self, queries: np.ndarray, k: int, where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        from dva.retrieval import filters
        from dva.retrieval.index.gallery_index import normalise

        g = self.gallery
        expr = filters.to_milvus(filters.parse(where), g.columns) if where else ""
        hits = g.client.search(g.collection, data=list(normalise(queries)), limit=k, filter=expr,
                               search_params={"metric_type": "IP", "params": {"ef": max(self.ef, k)}},
                               output_fields=["id"])
        ids = np.full((len(queries), k), -1, np.int64)
        scores = np.full((len(queries), k), -np.finfo(np.float32).max, np.float32)
        for r, row in enumerate(hits):
            for j, h in enumerate(row):
                ids[r, j], scores[r, j] = h["id"], h["distance"]
        return scores, ids


def _exact_path(name: str, gallery: Any, kept: int) -> bool:
    """Whether the store answers a filter that keeps ``kept`` items by scoring them exactly (its own rule)."""
    try:
        if name == "faiss":
            from dva.retrieval.index.gallery_index import EXACT_FILTER_MAX

            return bool(getattr(gallery, "refined", False)) and kept <= EXACT_FILTER_MAX
        from dva.retrieval.milvus.gallery import EXACT_FILTER_MAX as MILVUS_MAX

        return kept <= MILVUS_MAX
    except ImportError:  # a store without that rule
        return False


def _filter_grid(ctx: Context, name: str, gallery: Any, sel: float) -> list[dict[str, Any]]:
    """The settings of one filter: FAISS settings that visit the same lists (nprobe / fraction, capped at
    nlist) are one search, measured once (the default when it is one)."""
    nlist = (gallery.meta.get("params") or {}).get("nlist")
    grid, seen = [], set()
    for setting in sorted(_grid(ctx, name, gallery, True), key=lambda g: not g["default"]):
        if "nprobe" in setting:
            setting = {**setting, "nprobe_visited": int(min(nlist, math.ceil(setting["nprobe"] / sel)))}
            key = (setting["nprobe_visited"], setting["k_factor"])
            if key in seen:
                continue
            seen.add(key)
        grid.append(setting)
    return sorted(grid, key=lambda g: tuple(v for k, v in g.items() if k != "default"))


def phase_filter(ctx: Context, name: str) -> dict[str, Any]:
    """Filtered batch search of the fresh build (50% / 10% / 1%) against the exact filtered top-10.

    A filter the store answers by scoring the kept rows exactly (few enough of them) is measured
    once that way, and once more through the index (IVF or HNSW) at the default settings
    (``path``: ``ivf (forced)`` / ``hnsw (forced)``) for comparison.
    """
    gallery, open_s = _open(ctx, name, "build")
    ref = _truth(ctx, name, after=False)
    sel = selectivities(ctx.data.columns, slice(0, len(gallery)))
    idmap, rows = IdMap(len(gallery)), []
    index_path = "ivf" if name == "faiss" else "hnsw"
    for f in FILTERS:
        kept = int(ctx.data.mask(f)[:len(gallery)].sum())
        if not _exact_path(name, gallery, kept):
            grid = _filter_grid(ctx, name, gallery, sel[f])
            rows += [{**r, "path": index_path} for r in _search_rows(ctx, name, gallery, idmap, ref, (f,), grid)]
            continue
        default = [g for g in _filter_grid(ctx, name, gallery, sel[f]) if g["default"]]
        rows += [{**r, "path": "exact scan", "rows_scanned": kept, "nprobe_visited": None}
                 for r in _search_rows(ctx, name, gallery, idmap, ref, (f,), default)]
        forced = ForcedIVF(gallery) if name == "faiss" else ForcedHNSW(gallery)
        rows += [{**r, "path": forced.path} for r in _search_rows(ctx, name, forced, idmap, ref, (f,), default)]
    for r in rows:
        r["selectivity"] = sel[r["filter"]]
    return {"store": name, "n": len(gallery), "open_s": open_s, "rows": rows}


def _idmap_path(ctx: Context, name: str) -> Path:
    return ctx.work / name / "added_ids.npz"


def phase_add(ctx: Context, name: str) -> dict[str, Any]:
    """Add rows ``[n, n + n_add)`` to a copy of the build: the time of ``Gallery.add`` (committed), its ids."""
    ops, (n_b, n_a, _) = ctx.store(name), ctx.sizes(name)
    build_bytes = ops.committed_bytes(ops.location(ctx.work, "build"))
    copy_store(ops.location(ctx.work, "build"), ops.location(ctx.work, "added"))
    gallery, open_s = _open(ctx, name, "added")
    n0, data = ctx.data.spec.n, ctx.data
    rows = np.arange(n0, n0 + n_a)
    vectors = np.ascontiguousarray(data.vectors[n0:n0 + n_a])  # read before the clock starts
    paths, labels, extras = data.paths(rows), data.labels(rows), data.extras(rows)
    t0 = time.perf_counter()
    ids = np.asarray(gallery.add(vectors, paths, labels, extras))
    add_s = time.perf_counter() - t0
    settle_s = ops.settle(gallery)
    if len(ids) != n_a or len(np.unique(ids)) != n_a:
        raise RuntimeError(f"{name}: add of {n_a} vectors returned {len(ids)} ids ({len(np.unique(ids))} distinct)")
    IdMap(n_b, ids, rows).save(_idmap_path(ctx, name))
    return {"store": name, "n_before": n_b, "n_added": n_a, "open_s": open_s, "add_s": add_s, "index_wait_s": settle_s,
            "vectors_per_s": n_a / add_s, "count_after": len(gallery),
            "new_ids": [int(ids.min()), int(ids.max())], "build_bytes": build_bytes,
            "committed_bytes": ops.committed_bytes(ops.location(ctx.work, "added"))}


def phase_remove(ctx: Context, name: str) -> dict[str, Any]:
    """Remove ``n_remove`` seeded ids (old and added rows alike) from a copy of the added gallery."""
    ops, (n_b, n_a, n_r) = ctx.store(name), ctx.sizes(name)
    copy_store(ops.location(ctx.work, "added"), ops.location(ctx.work, "removed"))
    gallery, open_s = _open(ctx, name, "removed")
    idmap = IdMap.load(_idmap_path(ctx, name))
    gone = removed_of(ctx.data, n_b, n_a, n_r)
    ids = idmap.ids(gone)
    n0 = len(gallery)
    t0 = time.perf_counter()
    present = gallery.remove(ids.tolist())
    remove_s = time.perf_counter() - t0
    if present != n_r or len(gallery) != n0 - n_r:
        raise RuntimeError(f"{name}: remove of {n_r} ids said {present} were present; {n0} -> {len(gallery)} items")
    return {"store": name, "n_before": n0, "n_removed": n_r, "of_them_added": int(np.sum(gone >= ctx.data.spec.n)),
            "open_s": open_s, "remove_s": remove_s, "ids_per_s": n_r / remove_s, "count_after": len(gallery)}


def phase_after(ctx: Context, name: str) -> dict[str, Any]:
    """Search the gallery after add + remove at the default settings: recall holds, removed ids never return."""
    n_b, n_a, n_r = ctx.sizes(name)
    gallery, open_s = _open(ctx, name, "removed")
    if len(gallery) != n_b + n_a - n_r:
        raise RuntimeError(f"{name}: the gallery after add + remove holds {len(gallery)} items, not {n_b + n_a - n_r}")
    idmap = IdMap.load(_idmap_path(ctx, name))
    ref = _truth(ctx, name, after=True)
    grid = [s for s in _grid(ctx, name, gallery, False) if s["default"]]
    rows = _search_rows(ctx, name, gallery, idmap, ref, (None, *FILTERS), grid, single=False)  # batch only
    gone = set(removed_of(ctx.data, n_b, n_a, n_r).tolist())
    returned = 0
    for f in (None, *FILTERS):
        _, ids = gallery.search(ctx.data.queries, K, where=FILTERS[f]) if f else gallery.search(ctx.data.queries, K)
        returned += len(gone & set(idmap.rows(ids).ravel().tolist()))
    return {"store": name, "n": len(gallery), "open_s": open_s, "rows": rows, "removed_returned": returned}


def _probe_size(ctx: Context) -> int:
    return min(int(ctx.settings["milvus_probe"]), ctx.spec.n)


def phase_milvus_probe(ctx: Context) -> dict[str, Any]:
    """Milvus Lite's build rate on a small gallery, extrapolated: the largest size its phases can do in budget.

    Predicted time of its six phases at a size n: the build and the add of n/10 rows at the
    probe's rate (until indexed), five opens of the database, the searches (12 batches, growing
    like sqrt(n)) and each phase's fixed start-up; the largest listed size whose prediction is
    within ``--milvus-budget-s`` is chosen (the smallest listed one when none is).
    """
    ops, n = ctx.store("milvus"), _probe_size(ctx)
    loc = ops.location(ctx.work, "probe")
    t0 = time.perf_counter()
    gallery = ops.build(ctx.data.embeddings(0, n), loc)
    ops.settle(gallery)
    build_s = time.perf_counter() - t0  # until the index covers every row
    q = ctx.data.queries
    t0 = time.perf_counter()
    gallery.search(q, K)
    search_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ops.open(loc)
    open_s = time.perf_counter() - t0
    spec, budget = ctx.spec, float(ctx.settings["milvus_budget_s"])
    grow, startup = 1 + spec.n_add / spec.n, float(ctx.settings.get("phase_startup_s", 15.0))
    # A build stopped unfinished at a larger size bounds the growth: it took more than running_s,
    # so build time grows at least like size ** b through (n, build_s) and that point.
    stops = [a for a in ctx.stopped if a["phase"] == "milvus_build" and a["n"] > n]
    b = max([1.0, *(math.log(a["running_s"] / build_s) / math.log(a["n"] / n) for a in stops)])
    too_big = min([a["n"] for a in stops], default=math.inf)

    def predict(size: int) -> float:
        r = size / n
        return build_s * r**b * grow + 5 * open_s * r + 12 * search_s * max(1.0, r) ** 0.5 + 6 * startup

    predicted = {int(size): predict(size) for size in ctx.settings["milvus_sizes"] if size <= spec.n
                 and size < too_big}
    fits = [s for s, t in predicted.items() if t <= budget]
    chosen = max(fits) if fits else min(predicted)
    print(f"[milvus] probe: {n} rows built in {build_s:.1f}s ({n / build_s:.0f}/s); predicted "
          + ", ".join(f"{s:,}: {t:.0f}s" for s, t in predicted.items()) + f"; chosen {chosen:,}", flush=True)
    return {"store": "milvus", "n": n, "build_s": build_s, "rows_per_s": n / build_s, "search_s": search_s,
            "open_s": open_s, "queries": len(q), "budget_s": budget, "growth_exponent": b,
            "stopped_attempts": stops,
            "predicted_s": {str(s): t for s, t in predicted.items()},
            "chosen_n": chosen, "fits_budget": bool(fits), "full_size": chosen == spec.n, **ops.describe(gallery)}


def _store_phases(name: str) -> dict[str, tuple[Callable[[Context], dict[str, Any]], tuple[str, ...]]]:
    first = ("milvus_probe", "data") if name == "milvus" else ("data",)
    return {
        f"{name}_build": (lambda c: phase_build(c, name), first),
        f"{name}_search": (lambda c: phase_search(c, name), (f"{name}_build",)),
        f"{name}_filter": (lambda c: phase_filter(c, name), (f"{name}_build",)),
        f"{name}_add": (lambda c: phase_add(c, name), (f"{name}_build",)),
        f"{name}_remove": (lambda c: phase_remove(c, name), (f"{name}_add",)),
        f"{name}_after": (lambda c: phase_after(c, name), (f"{name}_remove",)),
    }


def all_phases() -> dict[str, tuple[Callable[[Context], dict[str, Any]], tuple[str, ...]]]:
    """Phase name -> (function, the phases whose outputs it needs), in running order."""
    from benchmarks.gallery_db.real import phase_real

    return {"data": (phase_data, ()), "truth": (phase_truth, ("data",)), **_store_phases("faiss"),
            "milvus_probe": (phase_milvus_probe, ("data",)), **_store_phases("milvus"),
            "real": (phase_real, ())}
