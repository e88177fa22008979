"""Building an index (``dva index``): choose the kind, fill FAISS shard by shard, commit it.

An embeddings directory is read shard by shard (memory-mapped): IVF-PQ trains on a sample read
row by row and the vectors are added one shard at a time, so a gallery larger than memory can be
indexed; the result is the same index as from the vectors in memory (tests/retrieval/test_index_build.py).

An output directory that already holds an index is rebuilt in place only when that index is
this gallery's (built from the same embeddings directory, or from the same paths and labels
with the same model); another gallery's index is never replaced without ``overwrite``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from dva.retrieval.index import files
from dva.retrieval.index.gallery_index import GalleryIndex, normalise
from dva.retrieval.index.items import ItemTable, check_columns
from dva.retrieval.index.params import KINDS, ivfpq_params
from dva.retrieval.store.embeddings import EmbeddingSet, EmbeddingShards, open_source


def build_index(
    embeddings: str | Path | EmbeddingSet | EmbeddingShards,
    out: str | Path,
    *,
    kind: str = "flat",
    nlist: int | None = None,
    m: int | None = None,
    nbits: int = 8,
    nprobe: int | None = None,
    train_size: int | None = None,
    refine: str = "fp16",
    k_factor: int = 8,
    fallback: bool = True,
    seed: int = 0,
    overwrite: bool = False,
) -> GalleryIndex:
    """Build a FAISS index over an embeddings directory and write it to ``out``.

    Args:
        embeddings: an embeddings directory (``dva embed`` output; read shard by shard), a
            loaded set, or :func:`dva.retrieval.store.open_embeddings` of a directory.
        out: the index directory to write (rebuilt in place when it holds this gallery's
            index; readers loading it meanwhile get the old or the new build, never an error).
        kind: ``flat`` (exact) or ``ivfpq`` (approximate, compact; for large galleries).
        nlist: IVF lists (default ~4*sqrt(N), capped so each has >= 39 training vectors).
        m: PQ sub-quantizers (default: largest divisor of the dimension <= 64).
        nbits: bits per PQ code.
        nprobe: lists visited per query (default :func:`dva.retrieval.index.params.default_nprobe`).
        train_size: vectors sampled to train IVF-PQ (default 40 * max(nlist, 2**nbits)).
        refine: IVF-PQ only: re-rank ``k * k_factor`` PQ candidates with vectors kept in the
            index: ``fp16`` (2 bytes/dim; recall@10 ~0.99 instead of ~0.6 on 768-d, see
            docs/BENCHMARKS.md), ``flat`` (4 bytes/dim, exact scores) or ``none`` (smallest:
            PQ codes only, m bytes/vector).
        k_factor: candidates re-ranked per requested neighbour.
        fallback: when the gallery is too small for IVF-PQ, build a flat index (recorded in
            ``index.json`` as ``fallback_reason``) instead of raising.
        seed: sampling/k-means seed.
        overwrite: replace whatever index ``out`` holds, even another gallery's.

    Returns:
        The loaded :class:`GalleryIndex`.

    Raises:
        ValueError: bad parameters, no vectors, or ``out`` holding another gallery's index (or
            other files) without ``overwrite``.
    """
    es, source = open_source(embeddings)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if len(es) == 0:
        raise ValueError("the embeddings hold no vectors (every image was skipped?)")
    d = Path(out)
    check_out(d, es, source, overwrite)  # before the work: a refusal costs nothing
    kind, params, fallback_reason = _choose(kind, len(es), es.dim, fallback, nlist=nlist, m=m, nbits=nbits,
                                            nprobe=nprobe, refine=refine, k_factor=k_factor)
    t0 = time.perf_counter()
    index = _filled(es, kind, params, train_size, seed)
    record = {
        "kind": kind,
        "metric": "inner_product",
        "fingerprint": es.fingerprint,
        "dim": int(es.dim),
        "count": len(es),
        "params": params,
        "fallback_reason": fallback_reason,
        "embeddings": {k: es.meta.get(k) for k in ("dtype", "normalized", "model")},
        "source": source,
        "build_seconds": round(time.perf_counter() - t0, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    record = _write(d, index, es, source, overwrite, record)
    return GalleryIndex(index, record, ItemTable.open(d / record["items_file"], record["columns"]), d)


def _same_gallery(old: dict, es: EmbeddingShards, source: dict) -> bool:
    """Whether the index described by ``old`` is a build of this gallery (so may be rebuilt)."""
    if old.get("format") == files.OLD_FORMAT:
        old_source = {"embeddings": None,
                      "items_sha256": files.items_digest(old["paths"], old.get("labels") or [None] * len(old["paths"]))}
    else:
        old_source = old.get("source") or {}
    if source["embeddings"] is not None and old_source.get("embeddings") == source["embeddings"]:
        return True  # the same embeddings directory, re-embedded or not: this command's own output
    return old.get("fingerprint") == es.fingerprint and old_source.get("items_sha256") == source["items_sha256"]


def check_out(d: Path, es: EmbeddingShards, source: dict, overwrite: bool) -> None:
    """Refuse to write into ``d`` when it holds another gallery's index, or other files.

    Raises:
        ValueError: naming what ``d`` holds and the two ways out (another ``--out``, ``--overwrite``).
    """
    if overwrite or not d.exists():
        return
    if not d.is_dir():
        raise ValueError(f"{d}: exists and is not a directory; choose another --out")
    fix = "choose another --out, or pass --overwrite to replace it"
    if not (d / files.POINTER).exists():
        foreign = sorted(p.name for p in d.iterdir() if not files.is_index_file(p.name))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ValueError(f"{d}: not empty and not a dva index (it holds {shown}); choose an empty or new "
                             "--out, or pass --overwrite to write the index beside these files")
        return  # empty, or only what a killed build of an index left
    try:
        old = files.read_pointer(d)
    except ValueError as exc:
        raise ValueError(f"{d}: holds an index that cannot be read ({exc}); {fix}") from None
    if old.get("last_change"):  # items were added or removed since the build: a rebuild would undo that
        raise ValueError(f"{d}: items were added to or removed from this index since it was built ({old['count']} "
                         f"items now, last change: {old['last_change']['op']}); rebuilding it from embeddings would "
                         f"drop those changes; add new images with `dva index --add EMB_DIR --out {d}`, or pass "
                         "--overwrite to rebuild it anyway")
    if not _same_gallery(old, es, source):
        was = (old.get("source") or {}).get("embeddings") or "vectors given in memory"
        now = source["embeddings"] or "vectors given in memory"
        raise ValueError(f"{d} already holds the index of another gallery ({old['count']} images from {was}, "
                         f"model {old['fingerprint']}; this build: {len(es)} images from {now}, model "
                         f"{es.fingerprint}); {fix}")


def _choose(kind: str, n: int, dim: int, fallback: bool, **ivfpq: Any) -> tuple[str, dict, str | None]:
    """The kind actually built, its parameters, and why IVF-PQ fell back to flat (or None)."""
    if kind == "flat":
        return "flat", {}, None
    params, why = ivfpq_params(n, dim, **ivfpq)
    if params is not None:
        return "ivfpq", params, None
    if not fallback:
        raise ValueError(f"cannot build an IVF-PQ index: {why}; use --kind flat")
    return "flat", {}, f"ivfpq not possible: {why}; built flat instead"


def _filled(es: EmbeddingShards, kind: str, params: dict, train_size: int | None, seed: int) -> Any:
    """The FAISS index of ``kind`` with every vector of ``es`` added, one shard at a time."""
    import faiss

    if kind == "flat":  # an id map: ids stay stable when items are removed (dva.retrieval.index.live)
        flat = faiss.IndexFlatIP(es.dim)
        index = faiss.IndexIDMap2(flat)
        index.own_fields = True
        flat.this.disown()
    else:  # IVF lists keep ids natively; an IndexRefine's store row is its id
        index = _trained_ivfpq(es, params, train_size, seed)
    start = 0
    for chunk in es.chunks():  # one shard at a time: the gallery never needs to fit in memory
        if kind == "flat":
            index.add_with_ids(normalise(chunk), np.arange(start, start + len(chunk), dtype=np.int64))
        else:
            index.add(normalise(chunk))  # ids = rows: ntotal.. (and the store's rows)
        start += len(chunk)
    return index


def _trained_ivfpq(es: EmbeddingShards, params: dict, train_size: int | None, seed: int) -> Any:
    """An IVF-PQ index (+ re-ranking store) trained on a seeded sample of ``es`` (records ``train_size``)."""
    import faiss

    n, nbits = len(es), params["nbits"]
    spec = f"IVF{params['nlist']},PQ{params['m']}x{nbits}"
    spec += {"none": "", "fp16": ",Refine(SQfp16)", "flat": ",RFlat"}[params["refine"]]
    index = faiss.index_factory(es.dim, spec, faiss.METRIC_INNER_PRODUCT)
    n_train = min(n, train_size or 40 * max(params["nlist"], 2**nbits))
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(n, size=n_train, replace=False)) if n_train < n else np.arange(n)
    sample = normalise(es.rows(ids))  # only the sampled rows are read
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.cp.seed = seed
    ivf.pq.cp.seed = seed
    # index_factory turns polysemous training on; it is slow and only serves Hamming
    # pre-filtering, which plain IVF-PQ search does not use.
    ivf.do_polysemous_training = False
    index.train(sample)
    ivf.nprobe = params["nprobe"]
    if params["refine"] != "none":
        faiss.ParameterSpace().set_index_parameter(index, "k_factor_rf", float(params["k_factor"]))
    params["train_size"] = int(n_train)
    return index


def _write(d: Path, index: Any, es: EmbeddingShards, source: dict, overwrite: bool, record: dict) -> dict:
    """Write the build's files under fresh names and commit them (see :mod:`dva.retrieval.index.files`)."""
    with files.writing(d):
        check_out(d, es, source, overwrite)  # again, under the lock: another build may have committed
        build = files.new_build_id()
        faiss_name, items_name = files.build_files(build)
        try:
            faiss_sha = files.write_faiss(index, d / faiss_name)
            columns = check_columns(getattr(es, "columns", ()) or (), "the embeddings' extra columns")
            items_sha = files.write_items(d / items_name, range(len(es)), es.paths, es.labels,
                                          getattr(es, "extras", None), columns)
        except BaseException:
            (d / faiss_name).unlink(missing_ok=True)  # never committed: nobody reads them
            raise
        return files.commit(d, {**record, "build": build, "faiss_file": faiss_name, "faiss_sha256": faiss_sha,
                                "items_file": items_name, "items_sha256": items_sha, "next_id": len(es),
                                "columns": list(columns)})
