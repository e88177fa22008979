"""A FAISS index as a living gallery (issue 27): stable ids, add, remove, items table, filtered search.

Flat, IVF-PQ and IVF-PQ + fp16 re-ranking each keep ids through adds and removals; removed ids
are never returned and never reused; metadata (int and str labels, extra columns) survives
build -> load -> add -> load; ``where`` filters run inside FAISS (exactly for flat, recall@10
>= 0.95 against the exact filtered search for IVF-PQ + fp16 at 1 %, 10 % and 50 %); old formats
still load and take adds; a killed add leaves the previous index; readers never fail.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from _helpers import kill_once_written

from dva.retrieval.backend import Gallery
from dva.retrieval.index import (
    FingerprintMismatchError,
    GalleryIndex,
    UnknownId,
    add_to_index,
    build_index,
    files,
    remove_from_index,
)
from dva.retrieval.store import EmbeddingSet

SRC = Path(__file__).resolve().parents[2] / "src"
KINDS = [("flat", "none"), ("ivfpq", "none"), ("ivfpq", "fp16")]


def _vectors(n: int, dim: int, seed: int, clusters: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(1234).normal(size=(clusters, dim))
    x = centers[rng.integers(0, clusters, n)] + 0.4 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _set(n: int, dim: int = 16, seed: int = 0, prefix: str = "g", fingerprint: str = "live",
         extras: bool = True) -> EmbeddingSet:
    """``n`` clustered vectors; labels alternate int/str; extra columns ``source`` and ``day``."""
    labels = [i % 7 if i % 2 else f"c{i % 5}" for i in range(n)]
    ex = [{"source": f"trap{i % 3}", "day": None if i % 4 == 0 else f"2024-05-{1 + i % 28:02d}"} for i in range(n)]
    return EmbeddingSet(_vectors(n, dim, seed), [f"/{prefix}/{i}.jpg" for i in range(n)], labels,
                        {"fingerprint": fingerprint, "dtype": "float32"},
                        ex if extras else [], ("source", "day") if extras else ())


def _build(es: EmbeddingSet, d: Path, kind: str, refine: str) -> GalleryIndex:
    if kind == "flat":
        return build_index(es, d)
    return build_index(es, d, kind="ivfpq", nlist=16, m=8, nbits=4, nprobe=16, refine=refine, fallback=False)


@pytest.mark.parametrize(("kind", "refine"), KINDS)
def test_ids_stay_stable_through_adds_and_removes(tmp_path, kind, refine):
    d = tmp_path / "idx"
    es = _set(800)
    gi = _build(es, d, kind, refine)
    assert isinstance(gi, Gallery) and gi.meta["format"] == "dva-index/3" and gi.meta["next_id"] == 800
    more = _set(100, seed=1, prefix="new")
    ids = gi.add(more.vectors, more.paths, more.labels, more.extras)
    np.testing.assert_array_equal(ids, np.arange(800, 900))
    gone = [0, 5, 801, 899]
    assert gi.remove(gone + [5, 12345]) == 4, "absent and repeated ids are not counted"
    again = gi.add(_vectors(3, 16, 77), ["/third/0.jpg", "/third/1.jpg", "/third/2.jpg"], [1, 2, 3])
    np.testing.assert_array_equal(again, [900, 901, 902])  # 899 was removed: never reused
    loaded = GalleryIndex.load(d)
    assert len(loaded) == 800 + 100 - 4 + 3 == len(loaded.ids())
    assert loaded.meta["next_id"] == 903 and not set(gone) & set(loaded.ids().tolist())
    # each survivor finds itself under its own id, removed ones are never returned (PQ codes alone, 4 bits
    # on 16-d, rank too coarsely for that: there the committed index answers as the changed one did)
    queries = np.concatenate([es.vectors[[1, 2, 3]], more.vectors[[2, 50]]])
    _, found = loaded.search(queries, 5)
    if kind == "ivfpq" and refine == "none":
        np.testing.assert_array_equal(found, gi.search(queries, 5)[1])
    else:
        assert found[:, 0].tolist() == [1, 2, 3, 802, 850]
    _, everything = loaded.search(es.vectors[[0, 5]], len(loaded))
    assert not {0, 5, 801, 899} & set(everything.ravel().tolist())
    assert [it.path for it in loaded.items([850, 3, 901])] == ["/new/50.jpg", "/g/3.jpg", "/third/1.jpg"]
    with pytest.raises(KeyError, match="no item with id 5"):
        loaded.items([5])
    with pytest.raises(UnknownId):
        loaded.paths[899]


@pytest.mark.parametrize(("kind", "refine"), KINDS)
def test_metadata_round_trips_build_load_add_load(tmp_path, kind, refine):
    d = tmp_path / "idx"
    es = _set(800)
    _build(es, d, kind, refine)
    gi = GalleryIndex.load(d)
    assert gi.columns == ("id", "path", "label", "source", "day")
    assert gi.items([0, 1, 4]) == [gi.items([0])[0], gi.items([1])[0], gi.items([4])[0]]
    it0, it1, it4 = gi.items([0, 1, 4])
    assert (it0.label, it1.label) == ("c0", 1) and type(it1.label) is int, "an int label stays an int"
    assert it0.extra == {"source": "trap0", "day": None} and it4.extra == {"source": "trap1", "day": None}
    assert it1.to_dict() == {"id": 1, "path": "/g/1.jpg", "label": 1, "source": "trap1", "day": "2024-05-02"}
    # an add with a new column: older items get None there
    gi.add(_vectors(2, 16, 9), ["/x/a.jpg", "/x/b.jpg"], ["7", 7], [{"source": "cam", "site": "north"}, {}])
    back = GalleryIndex.load(d)
    assert back.columns == ("id", "path", "label", "source", "day", "site")
    a, b, old = back.items([800, 801, 1])
    assert (a.label, b.label) == ("7", 7) and a.extra == {"source": "cam", "day": None, "site": "north"}
    assert b.extra == {"source": None, "day": None, "site": None}
    assert old.extra == {"source": "trap1", "day": "2024-05-02", "site": None}
    assert list(back.paths)[:2] == ["/g/0.jpg", "/g/1.jpg"] and back.paths[801] == "/x/b.jpg"
    assert len(back.labels) == 802 and list(back.labels)[-2:] == ["7", 7]


@pytest.mark.parametrize(("kind", "refine"), KINDS)
def test_vectors_read_back_by_id(tmp_path, kind, refine):
    d = tmp_path / "idx"
    es = _set(800)
    gi = _build(es, d, kind, refine)
    gi.remove([3])
    got = GalleryIndex.load(d).vectors([10, 700])
    tol = {"flat": 1e-6, "fp16": 2e-3}.get(refine if kind == "ivfpq" else "flat")
    if tol is None:  # PQ codes only: an approximation, but closer to its own vector than to others
        assert float(got[0] @ es.vectors[10]) > float(got[0] @ es.vectors[700])
    else:
        np.testing.assert_allclose(got, es.vectors[[10, 700]], atol=tol)
    with pytest.raises(KeyError):
        gi.vectors([3])  # removed: its re-ranking row may linger, it is gone all the same


def _exact_filtered(x: np.ndarray, q: np.ndarray, keep: np.ndarray, k: int) -> np.ndarray:
    s = q @ x[keep].T
    return keep[np.argsort(-s, axis=1, kind="stable")[:, :k]]


def test_filtered_flat_search_is_the_exact_filtered_search(tmp_path):
    es = _set(600)
    gi = build_index(es, tmp_path / "idx")
    q = _vectors(20, 16, 5)
    where = "source = 'trap1' and not label in (1, 3) and day is not null"
    keep = np.array([i for i, (lab, ex) in enumerate(zip(es.labels, es.extras))
                     if ex["source"] == "trap1" and lab not in (1, 3) and ex["day"] is not None])
    assert 20 < len(keep) < 300
    scores, ids = gi.search(q, 10, where=where)
    np.testing.assert_array_equal(ids, _exact_filtered(es.vectors, q, keep, 10))
    np.testing.assert_allclose(scores, np.sort(q @ es.vectors[keep].T, axis=1)[:, ::-1][:, :10], atol=1e-5)
    # a label compares by type: 'c0' is a str label, 3 an int one; '3' matches nothing
    assert set(gi.search(q, 50, where="label = 'c0'")[1].ravel()) <= set(range(0, 600, 10))
    assert (gi.search(q, 5, where="label = '3'")[1] == -1).all()


def test_a_filter_keeping_nothing_or_naming_an_unknown_column(tmp_path):
    gi = build_index(_set(100), tmp_path / "idx")
    scores, ids = gi.search(_vectors(3, 16, 2), 4, where="source = 'nowhere'")
    assert ids.shape == (3, 4) and (ids == -1).all() and (scores < -1e30).all()
    with pytest.raises(ValueError, match=r"colour.*id, path, label, source, day"):
        gi.search(_vectors(1, 16, 2), 4, where="colour = 'red'")
    with pytest.raises(ValueError, match="expected"):
        gi.search(_vectors(1, 16, 2), 4, where="label = ")


@pytest.mark.parametrize("path", ["scan", "ivf"])
def test_filtered_ivfpq_search_recall_at_1_10_50_percent(tmp_path, monkeypatch, path):
    """IVF-PQ + fp16: filtered recall@10 >= 0.95 against the exact filtered top-10 (issue 27's target),
    both when the kept items are scored exactly (``scan``: at most EXACT_FILTER_MAX kept) and
    through the IVF lists with more of them visited (``ivf``)."""
    import dva.retrieval.index.gallery_index as G

    if path == "ivf":
        monkeypatch.setattr(G, "EXACT_FILTER_MAX", 0)
    n, dim = 20_000, 32
    x = _vectors(n, dim, 0, clusters=200)
    rng = np.random.default_rng(3)
    group = rng.integers(0, 100, n)  # uncorrelated with the clusters: a rare class lives in every list
    es = EmbeddingSet(x, [f"/r/{i}.jpg" for i in range(n)], [int(g) for g in group],
                      {"fingerprint": "live"})
    gi = build_index(es, tmp_path / "idx", kind="ivfpq", nlist=128, m=8, nprobe=8, refine="fp16", fallback=False)
    q = _vectors(100, dim, 7, clusters=200)
    recalls = {}
    for where, keep in [("label = 0", group == 0), ("label < 10", group < 10), ("label < 50", group < 50)]:
        want = _exact_filtered(x, q, np.flatnonzero(keep), 10)
        got = gi.search(q, 10, where=where)[1]
        assert keep[got].all(), "every hit passes the filter"
        recalls[where] = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])
    assert min(recalls.values()) >= (0.999 if path == "scan" else 0.95), recalls


def test_the_exact_scan_pads_and_orders_like_faiss(tmp_path):
    es = _set(3000, dim=16)
    gi = build_index(es, tmp_path / "idx", kind="ivfpq", nlist=16, m=8, nbits=4, nprobe=2, refine="fp16",
                     fallback=False)
    q = _vectors(5, 16, 9)
    keep = np.array([i for i, ex in enumerate(es.extras) if ex["source"] == "trap2"])
    scores, ids = gi.search(q, 7, where="source = 'trap2'")
    np.testing.assert_array_equal(ids, _exact_filtered(es.vectors, q, keep, 7))
    assert (np.diff(scores, axis=1) <= 0).all()
    few = gi.search(q, 7, where="id in (4, 11)")  # two kept, seven asked: padded with -1
    assert {tuple(sorted(r[:2])) for r in few[1]} == {(4, 11)} and (few[1][:, 2:] == -1).all()
    assert (few[0][:, 2:] < -1e30).all()


def _v2_index(d: Path, es: EmbeddingSet) -> None:
    """Write an index as format 2 wrote it: a plain IndexFlatIP, items in JSON."""
    import faiss

    d.mkdir()
    flat = faiss.IndexFlatIP(es.dim)
    flat.add(es.vectors)
    faiss.write_index(flat, str(d / "index-1-a.faiss"))
    items = json.dumps({"paths": es.paths, "labels": es.labels}).encode()
    (d / "index-1-a.items.json").write_bytes(items)
    record = {"format": "dva-index/2", "kind": "flat", "metric": "inner_product", "fingerprint": "live",
              "dim": es.dim, "count": len(es), "params": {}, "fallback_reason": None, "build": "1-a",
              "faiss_file": "index-1-a.faiss", "items_file": "index-1-a.items.json", "retired": [],
              "faiss_sha256": hashlib.sha256((d / "index-1-a.faiss").read_bytes()).hexdigest(),
              "items_sha256": hashlib.sha256(items).hexdigest()}
    record["checksum"] = files._checksum(record)
    (d / "index.json").write_text(json.dumps(record))


def test_a_format_2_index_loads_filters_and_takes_adds(tmp_path):
    d = tmp_path / "v2"
    es = _set(30, extras=False)
    _v2_index(d, es)
    old = GalleryIndex.load(d)
    assert old.meta["format"] == "dva-index/2" and old.columns == ("id", "path", "label")
    assert old.paths == es.paths and old.labels == es.labels
    assert old.search(es.vectors[:3], 1)[1][:, 0].tolist() == [0, 1, 2]
    assert sorted(old.search(es.vectors[:1], 30, where="label = 'c0'")[1][0][:3].tolist()) == [0, 10, 20]
    new = _set(2, seed=4, prefix="n", extras=False)
    assert old.add(new.vectors, new.paths, new.labels).tolist() == [30, 31]
    assert old.remove([1]) == 1
    up = GalleryIndex.load(d)
    assert up.meta["format"] == "dva-index/3" and len(up) == 31 and up.meta["next_id"] == 32
    assert up.search(new.vectors, 1)[1][:, 0].tolist() == [30, 31] and up.paths[31] == "/n/1.jpg"
    assert up.search(es.vectors[[2]], 1)[1][0, 0] == 2 and 1 not in up.ids()


def test_adds_refuse_known_paths_other_models_and_dimensions(tmp_path):
    d = tmp_path / "idx"
    es = _set(50)
    gi = build_index(es, d)
    with pytest.raises(ValueError, match=r"already holds 1 of these images: /g/7.jpg \(id 7\)"):
        gi.add(es.vectors[:2], ["/new/0.jpg", "/g/7.jpg"], [1, 2])
    with pytest.raises(ValueError, match="given more than once"):
        gi.add(es.vectors[:2], ["/new/0.jpg", "/new/0.jpg"], [1, 2])
    with pytest.raises(ValueError, match="dimension 8 cannot go into index"):
        gi.add(np.ones((1, 8), np.float32), ["/new/1.jpg"], [1])
    with pytest.raises(FingerprintMismatchError, match="fingerprint live.*model other"):
        gi.add(es.vectors[:1], ["/new/1.jpg"], [1], fingerprint="other")
    other = _set(5, prefix="o", fingerprint="other")
    with pytest.raises(FingerprintMismatchError, match="live.*other"):
        add_to_index(d, other)
    assert len(GalleryIndex.load(d)) == 50 and len(gi) == 50, "a refused add changes nothing"


def test_module_functions_and_a_second_writer_are_not_lost(tmp_path):
    d = tmp_path / "idx"
    build_index(_set(40), d)
    first, second = GalleryIndex.load(d), GalleryIndex.load(d)  # two writers, e.g. a server and the CLI
    first.add(_vectors(1, 16, 3), ["/a.jpg"], [None])
    second.add(_vectors(1, 16, 4), ["/b.jpg"], [None])  # loaded before first's commit: catches up
    assert second.ids().tolist()[-2:] == [40, 41] and second.paths[40] == "/a.jpg"
    gi = add_to_index(d, _set(3, seed=5, prefix="c"))
    assert len(gi) == 45 and gi.paths[44] == "/c/2.jpg" and gi.items([44])[0].extra["source"] == "trap2"
    gi = remove_from_index(d, [40, 0])
    assert len(gi) == 43 and len(GalleryIndex.load(d)) == 43 and gi.meta["last_change"] == {"op": "remove", "count": 2}


def test_readers_never_fail_while_items_are_added_and_removed(tmp_path):
    d = tmp_path / "idx"
    es = _set(60)
    build_index(es, d)
    writer = GalleryIndex.load(d)
    shared = GalleryIndex.load(d)  # searched by threads while it is changed in place
    done, failures, counts = threading.Event(), [], set()

    def reader() -> None:
        while not done.is_set():
            try:
                for gi in (GalleryIndex.load(d), shared):
                    with gi.reading():
                        _, ids = gi.search(es.vectors[:4], 5, where="source != 'none'")
                        gi.items([i for i in ids.ravel() if i >= 0])  # every hit has its row
                        assert len(gi.ids()) == len(gi)
                    counts.add(len(gi))
            except Exception as exc:  # any failure counts, an assertion included
                failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for v in range(12):
            new = _set(3, seed=100 + v, prefix=f"w{v}")
            (writer if v % 2 else shared).add(new.vectors, new.paths, new.labels, new.extras)
            if v % 3 == 2:
                writer.remove([v])
    finally:
        done.set()
        for t in threads:
            t.join()
    assert failures == [], failures[:3]
    assert len(counts) > 2, "the readers must have overlapped several commits"
    assert len(GalleryIndex.load(d)) == 60 + 36 - 4


_KILLED_ADD = r"""
import sys, time
sys.path.insert(0, {src!r})
import faiss, numpy as np
from dva.retrieval.index import add_to_index, files
from dva.retrieval.store import EmbeddingSet

class SlowFaiss:  # writes the new build's whole temporary file, then hangs before the rename: killed there
    def __getattr__(self, name):
        return getattr(faiss, name)

    def write_index(self, index, writer):
        faiss.write_index(index, writer)
        print("WRITTEN", flush=True)
        time.sleep(120)

files._faiss = lambda: SlowFaiss()
rng = np.random.default_rng(9)
x = rng.normal(size=(500, 16)).astype(np.float32)
add_to_index({out!r}, EmbeddingSet(x, [f"/killed/{{i}}.jpg" for i in range(500)], [None] * 500,
                                   {{"fingerprint": "live"}}))
"""


def test_a_killed_add_leaves_the_previous_index_and_a_second_add_works(tmp_path):
    d = tmp_path / "idx"
    es = _set(3000)
    gi = build_index(es, d, kind="ivfpq", nlist=16, m=8, nbits=4, refine="fp16", fallback=False)
    want = gi.search(es.vectors[:20], 5, where="source = 'trap2'")
    kill_once_written(_KILLED_ADD.format(src=str(SRC), out=str(d)))
    assert len(list(d.glob(".index-*.tmp"))) == 1, sorted(p.name for p in d.iterdir())
    after = GalleryIndex.load(d)
    assert len(after) == 3000 and after.meta["next_id"] == 3000
    got = after.search(es.vectors[:20], 5, where="source = 'trap2'")
    np.testing.assert_array_equal(got[1], want[1])
    more = _set(10, seed=8, prefix="after")
    assert after.add(more.vectors, more.paths, more.labels, more.extras).tolist() == list(range(3000, 3010))
    assert len(GalleryIndex.load(d)) == 3010 and not list(d.glob(".*.tmp")), "the next commit cleans up"


def test_a_changed_index_is_not_rebuilt_from_its_embeddings_without_overwrite(tmp_path):
    d = tmp_path / "idx"
    es = _set(30)
    build_index(es, d)
    build_index(es, d)  # unchanged: its own embeddings rebuild it in place
    GalleryIndex.load(d).add(_vectors(1, 16, 3), ["/late.jpg"], [None])
    with pytest.raises(ValueError, match=r"added to or removed from this index.*--add.*--overwrite"):
        build_index(es, d)
    assert len(GalleryIndex.load(d)) == 31
    assert len(build_index(es, d, overwrite=True)) == 30


def test_routing_samples_use_stable_ids_after_removals(tmp_path):
    """The adapted router samples ids (and reads their vectors) among the items still there."""
    from dva.retrieval.domains import _sample_ids, index_vectors

    es = _set(40)
    gi = build_index(es, tmp_path / "idx")
    gi.remove(list(range(0, 40, 2)))
    ids, labels = _sample_ids(gi, 8)
    assert len(ids) == 8 and all(i % 2 for i in ids) and labels == {i: es.labels[i] for i in ids}
    np.testing.assert_allclose(index_vectors(gi, ids), es.vectors[ids], atol=1e-6)
    everything, _ = _sample_ids(gi, 100)
    assert everything == list(range(1, 40, 2))


def test_filtered_search_survives_faiss_torch_utils(tmp_path):
    """pytorch-metric-learning imports faiss.contrib.torch_utils, which swaps every index's ``search``
    for one without ``params``: a filtered search must still run (it did not, once a test imported it).
    In a child process: the patch is process-wide and would reach the other tests (Milvus Lite's
    embedded engine searches with FAISS in this process too, and cannot be fixed from here)."""
    code = f"""
import faiss.contrib.torch_utils  # the patch is the point
import numpy as np
from dva.retrieval.index import build_index
from dva.retrieval.store import EmbeddingSet
rng = np.random.default_rng(0)
x = rng.normal(size=(1000, 16)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
es = EmbeddingSet(x, [f"/g/{{i}}.jpg" for i in range(1000)], [i % 3 for i in range(1000)], {{"fingerprint": "t"}})
for i, kw in enumerate([{{}}, dict(kind="ivfpq", nlist=16, m=8, nbits=4, refine="none", fallback=False),
                        dict(kind="ivfpq", nlist=16, m=8, nbits=4, refine="fp16", fallback=False)]):
    gi = build_index(es, {str(tmp_path)!r} + f"/idx{{i}}", **kw)
    ids = gi.search(x[:3], 5, where="label = 1")[1]
    assert (ids >= 0).all() and all(int(j) % 3 == 1 for j in ids.ravel()), ids
    new = gi.add(x[:2] * -1, [f"/n/{{i}}/0.jpg", f"/n/{{i}}/1.jpg"], [1, 1])
    assert gi.remove([int(new[0])]) == 1
    got = gi.search(-x[1:2], 1, where="label = 1")[1]
    assert int(got[0, 0]) == int(new[1]), (got, new)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(SRC)})
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
