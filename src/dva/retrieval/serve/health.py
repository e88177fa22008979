"""What the service says about itself: ``GET /api/info`` (the galleries, the models, the limits)
and ``GET /healthz`` (whether every store answers; cheap: no scan, for load balancers)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dva.retrieval.serve.service import Service


def info(svc: Service) -> dict:
    """One domain: its index as before; several: the total, per-domain details under ``domains``.

    Works for any store: ``kind`` is None where the store has none (Milvus), and ``has_labels``
    is each domain's cached answer (:meth:`dva.retrieval.domains.Domain.labelled`), not a scan.
    """
    svc.refresh()
    gs = [d.index for d in svc.domains.domains.values()]
    one = len(gs) == 1
    per = svc.domains.info()
    cols = [list(g.columns) for g in gs]
    return {"count": sum(d["count"] for d in per["domains"]), "dim": gs[0].dim,
            "kind": gs[0].meta.get("kind") if one else None, "fingerprint": gs[0].fingerprint if one else None,
            "has_labels": any(d["has_labels"] for d in per["domains"]),
            "columns": [c for c in cols[0] if all(c in other for other in cols)],  # filterable everywhere
            "writable": svc.api_key is not None, **svc.limits, **per}


def store_problem(gallery: Any) -> str | None:
    """What makes a store unusable, found cheaply (no scan): None when it looks fine."""
    check = getattr(gallery, "health", None)
    if callable(check):  # a store may say itself what is wrong
        return check()
    path = getattr(gallery, "path", None)
    if path is not None:
        from dva.retrieval.index.files import POINTER

        if not (Path(path) / POINTER).is_file():
            return f"its index directory lost {POINTER}: the index files vanished"
    return None


def health(svc: Service) -> tuple[int, dict]:
    """``(200, ok)`` or ``(503, ...)`` naming the domains whose store is unusable; no scan."""
    total, problems = 0, {}
    for name, d in svc.domains.domains.items():
        try:
            total += len(d.index)
            problem = store_problem(d.index)
        except Exception as exc:  # noqa: BLE001 - any failure of the store is the answer
            # The type only: the text may name server paths or addresses, and /healthz is public.
            problem = f"the store does not answer ({type(exc).__name__})"
        if problem:
            problems[name] = problem
    body: dict[str, Any] = {"status": "unavailable" if problems else "ok", "items": total,
                            "domains": svc.domains.names}
    if problems:
        body["problems"] = problems
    return (503 if problems else 200), body
