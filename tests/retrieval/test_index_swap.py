"""Rebuilding an index in place while it is read (dva.retrieval.index.files): no reader ever fails.

The commit protocol: versioned build files, ``index.json`` swapped atomically, a retired build's
files kept past the next commit (and a grace period), a reader that re-reads the pointer once,
a killed build's temporary files removed by the next build, every file checked on load.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from _helpers import kill_once_written
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dva.retrieval.index import GalleryIndex, build_index, files
from dva.retrieval.index.gallery_index import normalise
from dva.retrieval.store import EmbeddingSet

SRC = Path(__file__).resolve().parents[2] / "src"


def _gallery(version: int, n: int = 40, dim: int = 8) -> EmbeddingSet:
    """Build ``version``'s vectors and paths: every path names the version, so a mixed pair shows."""
    x = np.random.default_rng(version).normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return EmbeddingSet(x, [f"/v{version}/{i}.jpg" for i in range(n)], [version] * n,
                        {"fingerprint": "swap", "dtype": "float32"})


def _version_of(gi: GalleryIndex, galleries: dict[int, EmbeddingSet]) -> int:
    """The build a loaded index is, checked whole: its paths, labels and every vector belong together."""
    version = int(gi.paths[0].split("/")[1][1:])
    es = galleries[version]
    assert gi.paths == es.paths and gi.labels == es.labels
    np.testing.assert_array_equal(gi.index.reconstruct_n(0, len(gi)), normalise(es.vectors))
    return version


def _build_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name != "index.json")


def test_a_retired_build_outlives_the_next_commit_and_the_grace_period(tmp_path, monkeypatch):
    d = tmp_path / "idx"
    metas = [build_index(_gallery(v), d, overwrite=True).meta for v in range(2)]
    first = [metas[0]["faiss_file"], metas[0]["items_file"]]
    second = [metas[1]["faiss_file"], metas[1]["items_file"]]
    assert set(first) <= set(_build_files(d)), "the build just retired is kept for readers of the old pointer"
    assert [r["files"] for r in metas[1]["retired"]] == [first]
    third = build_index(_gallery(2), d, overwrite=True).meta
    assert set(first + second) <= set(_build_files(d)), "retired less than the grace period ago: kept"
    monkeypatch.setattr(files, "RETIRED_GRACE_S", 0.0)
    fourth = build_index(_gallery(3), d, overwrite=True).meta
    kept = [third["faiss_file"], third["items_file"], fourth["faiss_file"], fourth["items_file"]]
    assert _build_files(d) == sorted(kept), "past the grace period: removed by the next commit, not before"
    assert _version_of(GalleryIndex.load(d), {3: _gallery(3)}) == 3


def test_a_reader_whose_build_vanished_reads_the_new_pointer_once(tmp_path, monkeypatch):
    d = tmp_path / "idx"
    monkeypatch.setattr(files, "RETIRED_GRACE_S", 0.0)
    build_index(_gallery(0), d)
    stale = files.read_pointer(d)  # what a slow reader read before the next two commits
    for v in (1, 2):
        build_index(_gallery(v), d, overwrite=True)
    assert not (d / stale["faiss_file"]).exists()
    real, calls = files.read_pointer, []

    def slow_reader(path: Path) -> dict:
        calls.append(path)
        return stale if len(calls) == 1 else real(path)

    monkeypatch.setattr(files, "read_pointer", slow_reader)
    assert _version_of(GalleryIndex.load(d), {2: _gallery(2)}) == 2 and len(calls) == 2
    # gone from the current pointer too: one clear error, after one retry
    calls.clear()
    (d / real(d)["faiss_file"]).unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \(named by .*index.json\); rebuild"):
        GalleryIndex.load(d)
    assert len(calls) == 2


def test_readers_never_fail_while_the_index_is_rebuilt_in_place(tmp_path):
    d = tmp_path / "idx"
    galleries = {v: _gallery(v, n=30 + v) for v in range(25)}
    build_index(galleries[0], d)
    done, failures, seen = threading.Event(), [], []

    def reader() -> None:
        while not done.is_set():
            try:
                seen.append(_version_of(GalleryIndex.load(d), galleries))
            except Exception as exc:  # any failure counts, an assertion included
                failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for v in range(1, 25):
            build_index(galleries[v], d, overwrite=True)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert failures == [], failures[:3]
    assert len(seen) > 25 and len(set(seen)) > 2, "the readers must have overlapped several commits"
    assert _version_of(GalleryIndex.load(d), galleries) == 24


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(n_builds=st.integers(2, 6), data=st.data())
def test_any_interleaving_of_reads_and_commits_gives_a_whole_build(tmp_path_factory, n_builds, data):
    """Property: a reader that read the pointer after commit i and opens the files after commit j >= i
    gets build i or build j whole (never a mix, never an error), even with no grace period."""
    d = tmp_path_factory.mktemp("swap") / "idx"
    i = data.draw(st.integers(0, n_builds - 1), label="pointer read after commit")
    j = data.draw(st.integers(i, n_builds - 1), label="files opened after commit")
    sizes = data.draw(st.lists(st.integers(1, 12), min_size=n_builds, max_size=n_builds), label="sizes")
    galleries = {v: _gallery(v, n=sizes[v]) for v in range(n_builds)}
    old_grace = files.RETIRED_GRACE_S
    files.RETIRED_GRACE_S = 0.0
    try:
        stale = None
        for v in range(j + 1):
            build_index(galleries[v], d, overwrite=True)
            if v == i:
                stale = files.read_pointer(d)
        real, calls = files.read_pointer, []

        def slow_reader(path: Path) -> dict:  # read the pointer after commit i, the files after commit j
            calls.append(path)
            return stale if len(calls) == 1 else real(path)

        files.read_pointer = slow_reader
        try:
            got = _version_of(GalleryIndex.load(d), galleries)
        finally:
            files.read_pointer = real
    finally:
        files.RETIRED_GRACE_S = old_grace
    assert got == (i if j - i <= 1 else j)  # the retired build survives one commit; then the retry
    assert len(calls) == (1 if j - i <= 1 else 2)


def _answers(gi: GalleryIndex, es: EmbeddingSet) -> tuple:
    scores, ids = gi.search(es.vectors, len(es))
    return gi.paths, gi.labels, ids.tolist(), scores.tolist()


def test_a_build_that_fails_mid_write_leaves_the_previous_index(tmp_path, monkeypatch):
    d = tmp_path / "idx"
    es = _gallery(0)
    want = _answers(build_index(es, d), es)
    before = sorted(p.name for p in d.iterdir())

    def broken(path: Path, *args, **kwargs) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(files, "write_items", broken)  # the FAISS file is written, then this fails
    with pytest.raises(OSError, match="disk full"):
        build_index(_gallery(1), d, overwrite=True)
    assert sorted(p.name for p in d.iterdir()) == before, "nothing of the failed build may remain"
    assert _answers(GalleryIndex.load(d), es) == want


_KILLED_BUILD = r"""
import sys, time
sys.path.insert(0, {src!r})
import faiss, numpy as np
from dva.retrieval.index import build_index, files
from dva.retrieval.store import EmbeddingSet

class SlowFaiss:  # writes the whole temporary file, then hangs before the rename: killed there
    def __getattr__(self, name):
        return getattr(faiss, name)

    def write_index(self, index, writer):
        faiss.write_index(index, writer)
        print("WRITTEN", flush=True)
        time.sleep(120)

files._faiss = lambda: SlowFaiss()
x = np.eye(6, dtype=np.float32)
build_index(EmbeddingSet(x, [f"/killed/{{i}}.jpg" for i in range(6)], [None] * 6, {{"fingerprint": "swap"}}),
            {out!r}, overwrite=True)
"""


def test_a_killed_build_leaves_the_previous_index_and_the_next_build_cleans_up(tmp_path):
    d = tmp_path / "idx"
    es = _gallery(0)
    want = _answers(build_index(es, d), es)
    kill_once_written(_KILLED_BUILD.format(src=str(SRC), out=str(d)))
    leftovers = sorted(p.name for p in d.glob(".index-*.faiss.*.tmp"))
    assert len(leftovers) == 1, sorted(p.name for p in d.iterdir())
    assert _answers(GalleryIndex.load(d), es) == want, "the previous index must stay loadable, unchanged"
    es1 = _gallery(1)
    assert _answers(build_index(es1, d, overwrite=True), es1) == _answers(GalleryIndex.load(d), es1)
    assert not list(d.glob(".*.tmp")), "the next build removes what the killed one left"


@pytest.mark.parametrize("target", ["faiss_file", "items_file", "index.json"])
def test_a_damaged_file_is_refused_naming_it(tmp_path, target):
    d = tmp_path / "idx"
    gi = build_index(_gallery(0), d)
    path = d / (gi.meta[target] if target != "index.json" else target)
    if target == "faiss_file":  # one vector component changed: still a valid FAISS file
        data = bytearray(path.read_bytes())
        data[-5] ^= 0x10
        path.write_bytes(bytes(data))
    elif target == "items_file":  # two paths swapped: still a valid table
        con = sqlite3.connect(path)
        con.execute("UPDATE items SET path = CASE id WHEN 0 THEN ? ELSE ? END WHERE id IN (0, 1)",
                    ["/v0/1.jpg", "/v0/0.jpg"])
        con.commit()
        con.close()
    else:  # another count: still valid JSON
        meta = json.loads(path.read_text())
        meta["count"] = 39
        path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="damaged") as err:
        GalleryIndex.load(d)
    assert str(path) in str(err.value)


def test_files_of_an_index_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        gi = build_index(_gallery(0), tmp_path / "idx")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "idx").iterdir()}
    assert modes == {"index.json": 0o644, gi.meta["faiss_file"]: 0o644, gi.meta["items_file"]: 0o644}
