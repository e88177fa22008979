"""Recall sanity on a real embedded gallery: cub100's test half, filtered by ``label in (...)``, on both stores.

The gallery is cub100's open-set test half (classes 50-99, 2,953 photos; ``$DVA_CUB100`` or
``../shared/data/cub100``, read in place), embedded by the bundled ImageNet MobileNetV2 at 224
px; without cub100 it is the project's generated dataset (:func:`dva.data.make_synthetic`).
Every gallery image is a query; the reference is the exact (filtered) top-10 of the same
vectors. The FAISS index is IVF-PQ with the largest ``nbits`` the gallery can train (a few
thousand vectors are too few for 8-bit codebooks), so the numbers test the filter path of a
real, approximate index rather than a flat one.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gallery_db import exact
from benchmarks.gallery_db.measure import IdMap, measure_search

K = 10
MIN_POINTS_PER_CENTROID = 39  # FAISS k-means: training vectors per PQ centroid (dva.retrieval.index.params)


def gallery_items(work: Path, limit: int | None) -> tuple[str, list[Any]]:
    """The dataset used (``cub100`` or ``synthetic``) and its gallery items (path, species/class name)."""
    from dva.data.locate import find_dataset
    from dva.retrieval.store.gallery import GalleryItem

    root = find_dataset("cub100")
    if root is not None:
        from dva.data.cub100 import read_cub100

        split, name = read_cub100(str(root), "open"), "cub100"
    else:
        from dva.data.synthetic import make_synthetic, read_synthetic

        folder = work / "real" / "synthetic"
        if not (folder / "labels.csv").is_file():
            make_synthetic(str(folder), num_classes=40, per_class=60, size=96)
        split, name = read_synthetic(str(folder), "open"), "synthetic"
    items = [GalleryItem(r.path, split.class_names[r.label]) for r in split.test]
    return name, items[:limit] if limit else items


def embed(items: list[Any], out: Path) -> tuple[Any, float]:
    """Embed ``items`` with the bundled MobileNetV2 at 224 px into ``out`` (resumed when done already)."""
    from dva import DVAConfig, build_model
    from dva.retrieval.store import open_embeddings
    from dva.retrieval.store.embed import embed_gallery
    from dva.runtime.torch_embedder import Embedder

    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = "mobilenetv2_100", "bundled", 224
    cfg.ica.enabled = False
    t0 = time.perf_counter()
    embed_gallery(Embedder(build_model(cfg, 0)), items, out, batch_size=32, progress=False)
    return open_embeddings(out), time.perf_counter() - t0


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def label_filters(labels: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Filters on ``label``: one class, a tenth and half of the classes (every k-th of the sorted names)."""
    names = sorted(set(labels))
    out = {}
    for key, count in (("1 class", 1), ("10% of classes", max(1, len(names) // 10)),
                       ("50% of classes", max(1, len(names) // 2))):
        chosen = names[:: max(1, len(names) // count)][:count]
        expr = f"label = {_quote(chosen[0])}" if count == 1 else f"label in ({', '.join(map(_quote, chosen))})"
        out[key] = (expr, chosen)
    return out


def _nbits(n: int) -> int:
    return next((b for b in (8, 7, 6, 5, 4) if n >= MIN_POINTS_PER_CENTROID * 2**b), 4)


def _measure_store(name: str, gallery: Any, vectors: np.ndarray, filters: dict, ref: dict,
                   repeats: int) -> list[dict[str, Any]]:
    ids = np.asarray(gallery.ids())
    if not np.array_equal(ids, np.arange(len(vectors))):
        raise RuntimeError(f"{name}: the real gallery's ids are not 0..{len(vectors) - 1}")
    rows = []
    for key, (expr, chosen) in {"none": (None, None), **filters}.items():
        m = measure_search(gallery, vectors, ref[key], IdMap(len(vectors)), k=K, where=expr, repeats=repeats)
        rows.append({"store": name, "filter": key, "where": expr, "classes": len(chosen) if chosen else None, **m})
        print(f"[real/{name}] {key:<16} {m['qps_batch']:9.1f} q/s  recall@10 {m['recall@10']:.3f}", flush=True)
    return rows


def phase_real(ctx: Any) -> dict[str, Any]:
    """Embed the real gallery, index it in both stores, measure filtered recall@10 against exact search."""
    from dva.retrieval.index import build_index
    from dva.retrieval.milvus import build_milvus

    work = ctx.work
    dataset, items = gallery_items(work, ctx.settings.get("real_limit"))
    es, embed_s = embed(items, work / "real" / "embeddings")
    vectors = np.ascontiguousarray(np.concatenate(list(es.chunks())), dtype=np.float32)
    labels = [str(x) for x in es.labels]
    filters = label_filters(labels)
    lab = np.asarray(labels)
    views = {"none": np.ones(len(lab), bool), **{k: np.isin(lab, chosen) for k, (_, chosen) in filters.items()}}
    ref = {k: rows for k, (_, rows) in exact.exact_topk(vectors, vectors, K, views).items()}
    nbits = _nbits(len(vectors))
    t0 = time.perf_counter()
    gi = build_index(es, work / "real" / "faiss", kind="ivfpq", nbits=nbits, fallback=True, overwrite=True)
    faiss_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    mg = build_milvus(es, str(work / "real" / "milvus.db"), overwrite=True)
    milvus_s = time.perf_counter() - t0
    rows = (_measure_store("faiss", gi, vectors, filters, ref, ctx.settings["repeats"])
            + _measure_store("milvus", mg, vectors, filters, ref, ctx.settings["repeats"]))
    return {"dataset": dataset, "images": len(vectors), "classes": len(set(labels)),
            "model": "mobilenetv2_100 bundled (ImageNet), 224 px, frozen", "embed_s": embed_s,
            "faiss": {"build_s": faiss_s, "kind": gi.meta.get("kind"), "params": gi.meta.get("params"),
                      "fallback_reason": gi.meta.get("fallback_reason")},
            "milvus": {"build_s": milvus_s},
            "selectivity": {k: float(v.mean()) for k, v in views.items()}, "rows": rows}
