"""In-process measurements of a :class:`dva.retrieval.domains.DomainSet`: the shared frozen prefix
against each domain's whole network, batch search speed, and routing accuracy of both routers."""
from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np


def subset(ds, names: list[str], share_prefix: bool = True, router: str | None = None):
    """The same loaded domains (one backbone, same models), restricted to ``names``."""
    from dva.retrieval.domains import DomainSet

    return DomainSet([ds.domains[n] for n in names], ds.shared, router or ds.router, share_prefix)


def _ms(fn, xs: list, repeats: int) -> float:
    fn(xs[0])  # warm-up
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(xs[i % len(xs)])
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 2)


def latency(ds, order: list[str], xs: list, repeats: int) -> list[dict]:
    """Median ms per single-image query (model + search, decoding excluded), shared vs whole networks."""
    rows = []
    for n in (1, 2, 4):
        names = order[:n]
        for share in (True, False):
            s = subset(ds, names, share)
            row = {"domains": n, "shared_prefix": share,
                   "one_ms": _ms(lambda x: s.search_tensor(x, 10, names[0]), xs, repeats),
                   "all_ms": _ms(lambda x: s.search_tensor(x, 10, "all"), xs, repeats)}
            if n > 1:
                row["routed_ms"] = _ms(lambda x: s.search_tensor(x, 10, None), xs, repeats)
            rows.append(row)
    return rows


def throughput(ds, order: list[str], paths: list[str], batch_size: int = 32) -> list[dict]:
    """Images/s of batch search over image files (``dva search`` with domains), 4 domains."""
    rows = []
    for share in (True, False):
        s = subset(ds, order, share)
        for target in (order[0], "all", None):
            t0 = time.perf_counter()
            s.search_paths(paths, 10, target, batch_size)
            dt = time.perf_counter() - t0
            rows.append({"shared_prefix": share, "target": target or "routed", "images": len(paths),
                         "images_per_s": round(len(paths) / dt, 1)})
    return rows


def routing(ds, order: list[str], held: dict[str, list[str]], sample: int) -> list[dict]:
    """Routing accuracy of each router on held-out photos of the domains (prototypes built fresh)."""
    from dva.retrieval.domains import DomainSet

    rows = []
    for router in ("frozen", "adapted"):
        fresh = [dataclasses.replace(ds.domains[n], prototypes=None) for n in order]
        s = DomainSet(fresh, ds.shared, router)
        t0 = time.perf_counter()
        s.build_prototypes(sample, use_cache=False)
        build_s = time.perf_counter() - t0
        per, margins, confusion = {}, [], {}
        for want in order:
            res = s.search_paths(held[want], k=1)
            got = [r.extra["route"]["domain"] for r in res]
            margins += [r.extra["route"]["margin"] for r in res]
            per[want] = round(100 * float(np.mean([g == want for g in got])), 1)
            confusion[want] = {n: got.count(n) for n in order}
        total = sum(len(held[n]) for n in order)
        right = sum(confusion[n][n] for n in order)
        rows.append({"router": router, "accuracy": round(100 * right / total, 1), "queries": total,
                     "per_domain": per, "confusion": confusion, "mean_margin": round(float(np.mean(margins)), 4),
                     "prototypes_s": round(build_s, 1),
                     "prototypes": {n: int(s.domains[n].prototypes.shape[0]) for n in order}})
    return rows
