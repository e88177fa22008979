"""The OOD matrix: every saved model scored, without further training, on the other datasets.

For a model trained on one ID dataset the OOD galleries are the test classes of the two other ID
datasets and every image of each ``ood_extra`` set (pets37), each retrieved leave-one-out
(``dva eval --split all`` on pets37). :func:`galleries` finds them (absent data: left out, named);
:func:`score` embeds them; :func:`matrix` assembles the table from the result files.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from benchmarks.datasets.plan import DatasetSpec, Table, locate, reader_root

METRICS = ("recall@1", "map@r")


class Gallery(NamedTuple):
    """An OOD gallery: its reader, root and which part is retrieved (``test`` classes or ``all`` images)."""

    name: str
    reader: str
    root: str
    part: str


def ood_names(table: Table, dataset: str) -> list[str]:
    """The OOD galleries of a model trained on ``dataset``: the other ID datasets, then the extra sets."""
    return [d for d in table.datasets if d != dataset] + list(table.ood_extra)


def galleries(table: Table, dataset: str, roots: dict[str, str] | None = None) -> tuple[list[Gallery], list[str]]:
    """The OOD galleries found on this machine, and the names of those not found.

    Args:
        table: the harness table.
        dataset: the ID dataset the models were trained on.
        roots: explicit folders by dataset name (else ``$ENV`` / ``../shared/data``).
    """
    found, missing = [], []
    for name in ood_names(table, dataset):
        spec: DatasetSpec = table.datasets.get(name) or table.ood_extra[name]
        folder = locate(spec, (roots or {}).get(name))
        if folder is None:
            missing.append(name)
            continue
        found.append(Gallery(name, spec.reader, reader_root(spec, folder), "test" if name in table.datasets else "all"))
    return found, missing


def gallery_images(g: Gallery) -> tuple[list[str], Any]:
    """The gallery's image paths and labels (sorted by path: the same order in every run)."""
    import numpy as np

    from dva.data import load_split

    split = load_split(g.reader, g.root, "open")
    recs = sorted(split.test if g.part == "test" else split.train + split.test, key=lambda r: r.path)
    return [r.path for r in recs], np.array([r.label for r in recs])


def score(embedder: Any, gals: list[dict[str, str]], batch_size: int) -> dict[str, dict[str, float]]:
    """Leave-one-out retrieval metrics of ``embedder`` on each gallery (dicts of :class:`Gallery` fields)."""
    from dva.metrics import retrieval_metrics

    out = {}
    for g in gals:
        paths, labels = gallery_images(Gallery(**g))
        e = embedder.embed_paths(paths, batch_size=batch_size, progress=False)
        out[g["name"]] = retrieval_metrics(e, labels)
    return out


# ----------------------------------------------------------------------------- the matrix
def _mean(row: dict[str, Any], key: str) -> float | None:
    v = (row.get("stats") or {}).get(key)
    return None if v is None else float(v[0])


def ood_r1(row: dict[str, Any], name: str) -> float | None:
    """A row's mean OOD R@1 (percent) on gallery ``name``; None when it was not scored."""
    v = ((row.get("stats") or {}).get("ood") or {}).get(name)
    return None if not v else float(v["recall@1"][0])


def matrix_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One main-profile result -> its OOD matrix rows: ID R@1 / MAP@R, each OOD R@1, their mean, and the
    changes against the frozen row (ID gain, mean OOD change).

    The mean is over every OOD gallery of the result (``settings.ood``); None when one was not
    scored for a row (a mean over fewer galleries would not compare).
    """
    names = list((result.get("settings") or {}).get("ood") or [])
    out = []
    for row in result["rows"]:
        ood = {n: ood_r1(row, n) for n in names}
        vals = list(ood.values())
        mean = sum(vals) / len(vals) if vals and all(v is not None for v in vals) else None
        out.append({"name": row["name"], "label": row["label"], "id_r1": _mean(row, "recall@1"),
                    "id_map": _mean(row, "map@r"), "ood": ood, "mean_ood": mean, "seeds_label": row.get("seeds_label")})
    frozen = next((r for r in out if r["name"] == "frozen"), None)
    for r in out:
        r["id_gain"] = None if frozen is None or r["id_r1"] is None else r["id_r1"] - frozen["id_r1"]
        r["ood_change"] = (None if frozen is None or r["mean_ood"] is None or frozen["mean_ood"] is None
                           else r["mean_ood"] - frozen["mean_ood"])
    return out


def matrix(results: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Main-profile results -> ``backbone -> dataset -> matrix rows`` (:func:`matrix_rows`).

    Raises:
        ValueError: two results of the same (backbone, dataset): merge them with ``--reuse`` first.
    """
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for res in results:
        s = res["settings"]
        per = out.setdefault(s["backbone"], {})
        if s["dataset"] in per:
            raise ValueError(f"two main results of ({s['backbone']}, {s['dataset']}): pass one (merge with --reuse)")
        per[s["dataset"]] = matrix_rows(res)
    return out


def gap_closed(method_r1: float | None, frozen_r1: float | None, full_r1: float | None) -> float | None:
    """Percent of the frozen-to-full-fine-tune R@1 gap a method closes; None without a positive gap."""
    if None in (method_r1, frozen_r1, full_r1) or not full_r1 - frozen_r1 > 0:  # type: ignore[operator]
        return None
    gap = 100.0 * (method_r1 - frozen_r1) / (full_r1 - frozen_r1)  # type: ignore[operator]
    return None if math.isnan(gap) else gap
