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


def _targets(names: list[str]) -> dict[str, str | None]:
    """The column -> the request: one domain (the first), all of them, routed (several domains only)."""
    return {"one": names[0], "all": "all", **({"routed": None} if len(names) > 1 else {})}


def latency(ds, order: list[str], xs: list, repeats: int) -> list[dict]:
    """Median ms per single-image query (model + search, decoding excluded), shared vs whole networks.

    Interleaved: every query runs in every setting before the next query, so all settings see
    the same load of a machine shared with other work.
    """
    sets = {(n, share): subset(ds, order[:n], share) for n in (1, 2, 4) for share in (True, False)}
    times: dict[tuple, list[float]] = {}
    for i in range(repeats + 1):  # the first round warms up
        for (n, share), s in sets.items():
            for col, target in _targets(order[:n]).items():
                t0 = time.perf_counter()
                s.search_tensor(xs[i % len(xs)], 10, target)
                if i:
                    times.setdefault((n, share, col), []).append(time.perf_counter() - t0)
    rows = []
    for (n, share) in sets:
        row = {"domains": n, "shared_prefix": share}
        row.update({f"{col}_ms": round(1000 * statistics.median(times[(n, share, col)]), 2)
                    for col in _targets(order[:n])})
        rows.append(row)
    return rows


def throughput(ds, order: list[str], paths: list[str], batch_size: int = 32) -> list[dict]:
    """Images/s of batch search over image files (``dva search`` with domains), 4 domains.

    Interleaved batch by batch (as :func:`latency`), after one warm-up batch per setting.
    """
    sets = {share: subset(ds, order, share) for share in (True, False)}
    targets = {"one": order[0], "all": "all", "routed": None}
    spent: dict[tuple, float] = {}
    for lo in range(-batch_size, len(paths), batch_size):
        batch = paths[max(lo, 0):max(lo, 0) + batch_size]
        for share, s in sets.items():
            for col, target in targets.items():
                t0 = time.perf_counter()
                s.search_paths(batch, 10, target, batch_size)
                if lo >= 0:
                    spent[(share, col)] = spent.get((share, col), 0.0) + time.perf_counter() - t0
    return [{"shared_prefix": share, "target": (order[0] if col == "one" else col), "images": len(paths),
             "images_per_s": round(len(paths) / spent[(share, col)], 1)} for share in sets for col in targets]


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


def runtimes(sets: dict, order: list[str], xs: list, repeats: int) -> dict:
    """The same N domains on each runtime (shared prefix): median ms per single-image query, interleaved
    query by query as :func:`latency`, and the lowest cosine between the runtimes' embeddings."""
    import torch

    times: dict[tuple, list[float]] = {}
    for i in range(repeats + 1):  # the first round warms up
        for rt, s in sets.items():
            for col, target in _targets(order).items():
                t0 = time.perf_counter()
                s.search_tensor(xs[i % len(xs)], 10, target)
                if i:
                    times.setdefault((rt, col), []).append(time.perf_counter() - t0)
    rows = [{"runtime": rt, **{f"{col}_ms": round(1000 * statistics.median(times[(rt, col)]), 2)
                               for col in _targets(order)}} for rt in sets]
    x = torch.cat(xs)
    embs = {rt: s.embed(x) for rt, s in sets.items()}
    ref, *others = list(embs)
    cos = {f"{rt}_vs_{ref}": {n: round(float((embs[rt][n] * embs[ref][n]).sum(1).min()), 7) for n in order}
           for rt in others}
    return {"latency": rows, "min_cosine": cos, "images": len(x)}
