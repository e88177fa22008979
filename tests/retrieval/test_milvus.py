"""The Milvus store against real Milvus Lite: embedded (a .db file) and through its loopback server."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from dva.retrieval.backend import Gallery  # noqa: E402
from dva.retrieval.filters import FilterError, matches, parse  # noqa: E402
from dva.retrieval.index import FingerprintMismatchError  # noqa: E402
from dva.retrieval.milvus import MilvusGallery, build_milvus, collection_name  # noqa: E402
from dva.retrieval.store import EmbeddingSet  # noqa: E402

N, D = 40, 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=["embedded", "server"])
def uri(request, tmp_path_factory) -> str:
    """A Milvus Lite database: a local .db path, or a `milvus-lite server` on loopback (always stopped)."""
    d = tmp_path_factory.mktemp(request.param)
    if request.param == "embedded":
        yield str(d / "gallery.db")
        return
    port = _free_port()
    log = open(d / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(d / "srv.db"),
                             "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"milvus-lite server did not start: {(d / 'server.log').read_text()[-2000:]}")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _set(fingerprint: str, n: int = N, seed: int = 0, prefix: str = "/g") -> EmbeddingSet:
    x = np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = [i % 3 if i % 2 else f"c{i % 3}" for i in range(n)]  # int and str labels mixed
    labels[5 % n] = None
    extras = [{"source": None if i % 5 == 0 else f"trap{i % 2}", "date": f"2024-0{1 + i % 9}-01"} for i in range(n)]
    return EmbeddingSet(x, [f"{prefix}/{i}.jpg" for i in range(n)], labels, {"fingerprint": fingerprint},
                        extras, ("source", "date"))


@pytest.fixture(scope="module")
def built(uri) -> tuple[MilvusGallery, EmbeddingSet]:
    es = _set("read")
    return build_milvus(es, uri), es


def test_build_implements_the_protocol_and_finds_each_vector_first(built):
    g, es = built
    assert isinstance(g, Gallery)
    assert (len(g), g.dim, g.fingerprint, g.columns) == (N, D, "read", ("id", "path", "label", "source", "date"))
    assert g.collection == collection_name("read") == "dva_read"
    scores, ids = g.search(es.vectors, 3)
    np.testing.assert_array_equal(ids[:, 0], np.arange(N))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    np.testing.assert_array_equal(g.ids(), np.arange(N))


@pytest.mark.parametrize("where", [
    "label = 1", "label = '1'", "label = 'c1'", "label > 0", "label >= 'c1'", "label is null",
    "not label = 1", "label in (1, 'c2')", "label not in (0, 'c0')",
    "source = 'trap1'", "source is null", "not source = 'trap1'", "source = 'trap1' and label = 1",
    "date >= '2024-05-01' or id < 3", "id in (1, 2, 39)", "path = '/g/7.jpg'", "label < 1.5",
])
@pytest.mark.parametrize("path", ["scan", "hnsw"])
def test_filtered_search_returns_exactly_the_matching_items(built, where, path, monkeypatch):
    """Both ways a filtered search runs: the kept rows scored exactly (few kept), and HNSW with
    Milvus's filter inside (``EXACT_FILTER_MAX`` 0 forces it)."""
    import dva.retrieval.milvus.gallery as MG

    if path == "hnsw":
        monkeypatch.setattr(MG, "EXACT_FILTER_MAX", 0)
    g, es = built
    f = parse(where)
    want = {i for i in range(N)
            if matches(f, {"id": i, "path": es.paths[i], "label": es.labels[i], **es.extras[i]})}
    scores, ids = g.search(es.vectors[:2], N, where=where)
    for row, srow in zip(ids, scores):
        kept = row[row >= 0]
        assert set(kept.tolist()) == want and len(kept) == len(want)
        assert np.all(row[len(want):] == -1) and np.all(srow[len(want):] < -1e38)  # padded, FAISS-style
        assert np.all(np.diff(srow[:len(want)]) <= 1e-6)  # best first


def test_search_pads_when_k_exceeds_the_gallery_and_refuses_bad_filters(built):
    g, es = built
    scores, ids = g.search(es.vectors[0], 100)
    assert ids.shape == (1, N)  # k' = min(k, len)
    _, ids = g.search(es.vectors[:1], 5, where="id = 3")
    assert ids.tolist() == [[3, -1, -1, -1, -1]]
    with pytest.raises(FilterError, match="unknown column 'colour'"):
        g.search(es.vectors[:1], 5, where="colour = 'red'")
    with pytest.raises(FilterError, match="position 5"):
        g.search(es.vectors[:1], 5, where="id = ")


def test_items_and_vectors_round_trip_in_the_order_asked(built):
    g, es = built
    items = g.items([7, 5, 0, 7])
    assert [it.id for it in items] == [7, 5, 0, 7]
    assert items[0].to_dict() == {"id": 7, "path": "/g/7.jpg", "label": 1, "source": "trap1", "date": "2024-08-01"}
    assert (items[1].label, items[2].label, items[2].extra) == (None, "c0", {"source": None, "date": "2024-01-01"})
    assert isinstance(items[0].label, int) and isinstance(items[2].label, str)
    np.testing.assert_allclose(g.vectors([3, 1]), es.vectors[[3, 1]], atol=1e-6)
    with pytest.raises(KeyError, match="id 999 is not in"):
        g.items([1, 999])


def test_reopen_and_fingerprint_checks(built, uri):
    g, _ = built
    again = MilvusGallery.open(uri, fingerprint="read")
    assert (again.meta["count"], again.columns, again.meta["source"]) == (N, g.columns, g.meta["source"])
    again.check_fingerprint("read")
    with pytest.raises(FingerprintMismatchError, match="fingerprint read but the query model has fingerprint other"):
        again.check_fingerprint("other")
    with pytest.raises(ValueError, match="no gallery of model nope"):
        MilvusGallery.open(uri, fingerprint="nope")


def test_add_and_remove_keep_ids_stable_and_never_reuse_them(uri):
    es = _set("live", n=10)
    g = build_milvus(es, uri)
    assert g.remove([9, 3, 3, 12345]) == 2  # absent ids are ignored
    assert len(g) == 8 and 9 not in g.ids() and g.meta["count"] == 8
    new = g.add(es.vectors[:2] * 3, ["/new/a.jpg", "/new/b.jpg"], ["n", 7], [{"source": "s"}, {}])
    assert new.tolist() == [10, 11]  # 9 was the last id: removed, never handed out again
    got = g.items([11, 10, 4])
    assert [(i.path, i.label, i.extra) for i in got] == [
        ("/new/b.jpg", 7, {"source": None, "date": None}), ("/new/a.jpg", "n", {"source": "s", "date": None}),
        ("/g/4.jpg", "c1", es.extras[4])]
    np.testing.assert_allclose(g.vectors([10]), es.vectors[:1], atol=1e-6)  # normalised on the way in
    _, ids = g.search(es.vectors[1:2], 1, where="label = 7")
    assert ids.tolist() == [[11]]
    g.remove([11])
    reopened = MilvusGallery.open(uri, fingerprint="live")  # next_id is kept with the collection
    assert reopened.add(es.vectors[:1], ["/new/c.jpg"], [None]).tolist() == [12]
    assert reopened.ids().tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 10, 12]


def test_add_refuses_what_it_cannot_store_before_writing(uri):
    g = build_milvus(_set("refuse", n=4), uri)
    v = np.ones((1, D), np.float32)
    with pytest.raises(ValueError, match=r"already holds 1 of these images: /g/2.jpg \(id 2\)"):
        g.add(v, ["/g/2.jpg"], [None])
    with pytest.raises(ValueError, match=r"columns \['colour'\] are not in"):
        g.add(v, ["/x.jpg"], [None], [{"colour": "red"}])
    with pytest.raises(ValueError, match="a gallery value is a string, a 64-bit integer or null"):
        g.add(v, ["/x.jpg"], [1.5])
    with pytest.raises(ValueError, match="dimension 3"):
        g.add(np.ones((1, 3)), ["/x.jpg"], [None])
    assert len(g) == 4 and g.add(v, ["/x.jpg"], [None]).tolist() == [4]  # nothing was used up


def test_build_refuses_another_gallery_of_the_same_model(uri):
    first = _set("shared", n=6)
    build_milvus(first, uri)
    assert len(build_milvus(first, uri)) == 6  # the same gallery again: rebuilt
    other = _set("shared", n=8, seed=1, prefix="/other")
    with pytest.raises(ValueError, match=r"collection dva_shared already holds another gallery .*6 images.*"
                                         r"8 images.*--overwrite"):
        build_milvus(other, uri)
    g = build_milvus(other, uri, overwrite=True)
    assert len(g) == 8 and g.items([0])[0].path == "/other/0.jpg"
    with pytest.raises(ValueError, match="several models"):
        MilvusGallery.open(uri)  # dva_read, dva_live, ... are all here


def test_a_second_process_cannot_open_an_embedded_database(tmp_path):
    db = tmp_path / "one.db"
    build_milvus(_set("solo", n=3), str(db))
    code = ("from dva.retrieval.milvus import MilvusGallery\n"
            f"try:\n    MilvusGallery.open({str(db)!r})\nexcept ConnectionError as e:\n    print('REFUSED', e)")
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": src})
    assert "REFUSED" in out.stdout, out.stderr[-2000:]
    assert "one process open a database at a time" in out.stdout and "milvus-lite server --data-dir" in out.stdout
    assert len(MilvusGallery.open(str(db))) == 3  # this process still has it


def test_build_refuses_column_names_it_cannot_store(tmp_path):
    es = _set("cols", n=3)
    bad = EmbeddingSet(es.vectors, es.paths, es.labels, es.meta, [{"Path": "x"}, {}, {}], ("Path",))
    with pytest.raises(ValueError, match="column 1 'Path': the name is reserved"):
        build_milvus(bad, str(tmp_path / "c.db"))


def test_bad_uris_say_what_a_uri_is():
    with pytest.raises(ValueError, match="ending in .db .* http"):
        MilvusGallery.open("gallery.sqlite")
