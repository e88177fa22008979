"""One call from a gallery to a report: embed, index (flat), search, write the HTML report."""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dva.retrieval.index.build import build_index
from dva.retrieval.report import write_report
from dva.retrieval.search import (QueryResult, gallery_items_at, hits_to_fetch, resolve_query_labels, search_paths,
                                  trim_hits)
from dva.retrieval.store.embed import embed_gallery
from dva.retrieval.store.gallery import GalleryItem, Label

if TYPE_CHECKING:
    from dva.runtime.protocol import EmbedderLike


def summarize(results: Sequence[QueryResult], k: int, in_gallery: Collection[str] | None = None) -> dict:
    """Retrieval summary of query results whose labels may be known.

    Args:
        results: The queries' hits.
        k: The hits counted besides a query's own.
        in_gallery: The resolved paths of the queries that are gallery files
            (:func:`dva.retrieval.search.gallery_items_at`); None: those found among their own hits.

    Returns:
        ``gallery_queries``: the queries that are gallery files;
        ``self_hit_rate``: among them, the share whose rank-1 hit is the file itself (None when
        no query is in the gallery); ``precision_at_k``: mean share
        of same-label hits among the first ``k`` non-self hits; ``recall_at_1``: share of
        labelled queries whose first non-self hit has their label (None without labels).
    """
    self_hits = self_total = 0
    precs, r1 = [], []
    for res in results:
        qpath = str(Path(res.query).resolve())
        own = qpath in in_gallery if in_gallery is not None else any(
            str(Path(h.path).resolve()) == qpath for h in res.hits)
        if own:
            self_total += 1
            self_hits += bool(res.hits) and str(Path(res.hits[0].path).resolve()) == qpath
        others = [h for h in res.hits if str(Path(h.path).resolve()) != qpath][:k]
        if res.label is not None and others and all(h.label is not None for h in others):
            same = [str(h.label) == str(res.label) for h in others]
            precs.append(sum(same) / len(same))
            r1.append(float(same[0]))
    return {
        "queries": len(results),
        "gallery_queries": self_total,
        "self_hit_rate": self_hits / self_total if self_total else None,
        "precision_at_k": sum(precs) / len(precs) if precs else None,
        "recall_at_1": sum(r1) / len(r1) if r1 else None,
        "k": k,
    }


def index_search_report(
    embedder: EmbedderLike,
    gallery_paths: Sequence[str | Path],
    gallery_labels: Sequence[Label] | None,
    query_paths: Sequence[str | Path],
    out_dir: str | Path,
    log_path: str | Path | None = None,
    k: int = 8,
    class_names: Sequence[str] | Mapping | None = None,
    query_labels: Sequence[Label] | None = None,
    batch_size: int = 64,
    progress: bool = False,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    maps: EmbedderLike | None = None,
) -> dict:
    """Embed a gallery, index it (exact), search the queries and write the visual report.

    Args:
        embedder: a :class:`dva.runtime.torch_embedder.Embedder` (or anything with the same attributes).
        gallery_paths: gallery image files.
        gallery_labels: their labels (None: unknown).
        query_paths: query image files (may be gallery files: then the query itself is
            excluded from precision and its label is taken from the gallery).
        out_dir: gets ``embeddings/``, ``index/`` and ``report/index.html``.
        log_path: a run's ``log.jsonl`` for the training-curve plot.
        k: hits per query (gallery queries get one more so that k remain besides the self hit).
        class_names: label -> display name for the report.
        query_labels: labels of queries outside the gallery.
        batch_size: embedding batch size.
        progress: show progress bars.
        metrics: model name -> Recall@K / MAP@R, shown as a table in the report.
        maps: the embedder whose activation maps the report draws (default ``embedder``; e.g.
            the torch twin of an onnxruntime ``embedder``, whose graph outputs embeddings only).

    Returns:
        Paths (``embeddings_dir``, ``index_dir``, ``report_html``, optional ``curves_png``),
        ``num_gallery``, ``num_skipped``, ``skipped`` and :func:`summarize`'s keys.
    """
    out = Path(out_dir)
    labels = list(gallery_labels) if gallery_labels is not None else [None] * len(gallery_paths)
    if len(labels) != len(gallery_paths):
        raise ValueError(f"{len(gallery_paths)} gallery paths but {len(labels)} labels")
    items = [GalleryItem(str(Path(p).resolve()), lab) for p, lab in zip(gallery_paths, labels)]
    emb = embed_gallery(embedder, items, out / "embeddings", batch_size=batch_size,
                        progress=progress, overwrite=True)
    index = build_index(out / "embeddings", out / "index", kind="flat")
    qlabels = list(query_labels) if query_labels is not None else resolve_query_labels(index, query_paths)
    kq = hits_to_fetch(index, query_paths, k)
    results = trim_hits(search_paths(index, embedder, [str(Path(p).resolve()) for p in query_paths], kq,
                                     labels=qlabels), k)
    summary = summarize(results, k, set(gallery_items_at(index, query_paths)))
    report_summary = {
        "gallery images": len(index),
        "skipped images": len(emb.skipped),
        **{key: val for key, val in summary.items() if val is not None},
    }
    html = write_report(out / "report", results, embedder=maps or embedder, log_path=log_path,
                        class_names=class_names, summary=report_summary, metrics=metrics)
    curves = out / "report" / "curves.png"
    return {
        "embeddings_dir": str(out / "embeddings"),
        "index_dir": str(out / "index"),
        "report_html": str(html),
        "curves_png": str(curves) if curves.exists() else None,
        "num_gallery": len(index),
        "num_skipped": len(emb.skipped),
        "skipped": emb.skipped,
        **summary,
    }
