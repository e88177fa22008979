"""Near-duplicate search: planted duplicates found exactly (against brute force), groups, stores."""
from __future__ import annotations

import numpy as np
import pytest

from dva.retrieval.backend import Item
from dva.retrieval.dedup import approximate_vectors, find_duplicates, group_pairs, range_pairs
from dva.retrieval.index import GalleryIndex, build_index
from dva.retrieval.store import EmbeddingSet

THRESHOLD = 0.95


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def planted(n: int = 600, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Random unit vectors (pairwise cosine far below 0.95 at dim 32) with duplicates planted:
    exact copies, near copies (cosine ~0.98), a chain a~b~c whose ends are below the threshold,
    and a decoy just below the threshold."""
    rng = np.random.default_rng(seed)
    x = _unit(rng.normal(size=(n, dim)))
    x[10] = x[3]  # exact copy
    x[11] = x[3]  # a second copy: 3, 10, 11 are one group
    x[20] = _unit(x[5:6] + 0.12 * _unit(rng.normal(size=(1, dim))))[0]  # near copy, cos ~0.99
    u = _unit(rng.normal(size=(1, dim)))[0]
    u -= (u @ x[40]) * x[40]
    u /= np.linalg.norm(u)
    ang = np.arccos(0.96)  # 40 -> 41 -> 42: 0.96 each, 40 -> 42 about 0.84
    x[41] = np.cos(ang) * x[40] + np.sin(ang) * u
    x[42] = np.cos(2 * ang) * x[40] + np.sin(2 * ang) * u
    ang = np.arccos(0.949)  # the decoy: below the threshold by 0.001
    v = _unit(rng.normal(size=(1, dim)))[0]
    v -= (v @ x[60]) * x[60]
    x[61] = np.cos(ang) * x[60] + np.sin(ang) * v / np.linalg.norm(v)
    return _unit(x), {"groups": [[3, 10, 11], [40, 41, 42], [5, 20]]}


def brute_force(x: np.ndarray, threshold: float) -> dict[tuple[int, int], float]:
    s = x.astype(np.float64) @ x.astype(np.float64).T
    i, j = np.nonzero(np.triu(s >= threshold, k=1))
    return {(int(a), int(b)): float(s[a, b]) for a, b in zip(i, j)}


class MatrixGallery:
    """The read side of the Gallery protocol over a matrix, with ids that are not rows."""

    def __init__(self, x: np.ndarray, ids: np.ndarray, meta: dict | None = None) -> None:
        self.x, self._ids, self.meta = x, ids, meta or {}
        self.row = {int(i): r for r, i in enumerate(ids)}

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> np.ndarray:
        return self._ids

    def vectors(self, ids) -> np.ndarray:
        return self.x[[self.row[int(i)] for i in ids]]

    def items(self, ids) -> list[Item]:
        return [Item(int(i), f"/g/{int(i)}.jpg") for i in ids]


@pytest.mark.parametrize("block", [7, 4096])
def test_range_pairs_equal_brute_force(block):
    x, _ = planted()
    want = brute_force(x, THRESHOLD)
    i, j, s = range_pairs(x, THRESHOLD, block=block)
    got = {(int(a), int(b)): float(c) for a, b, c in zip(i, j, s)}
    assert got.keys() == want.keys()
    assert {(3, 10), (3, 11), (10, 11), (5, 20), (40, 41), (41, 42)} <= set(got)
    assert (40, 42) not in got and (60, 61) not in got  # the chain's ends and the decoy: below
    assert all(abs(got[p] - want[p]) < 1e-9 for p in want)
    assert list(s) == sorted(s, reverse=True) and np.all(i < j)


def test_threshold_edges_are_exact():
    x, _ = planted()
    i, j, scores = range_pairs(x, 0.94)
    s = float(scores[(i == 60) & (j == 61)][0])  # ~0.949, as range_pairs computes it
    at = {(int(a), int(b)) for a, b, _ in zip(*range_pairs(x, s))}
    above = {(int(a), int(b)) for a, b, _ in zip(*range_pairs(x, np.nextafter(s, 2.0)))}
    assert (60, 61) in at and (60, 61) not in above  # >= the threshold, by the float64 score itself


def test_groups_by_transitivity():
    assert group_pairs([1, 2, 7, 9], [2, 3, 8, 7]) == [[1, 2, 3], [7, 8, 9]]
    assert group_pairs([5, 0], [6, 5]) == [[0, 5, 6]]
    assert group_pairs([], []) == []


def test_find_duplicates_on_ids_that_are_not_rows():
    x, truth = planted()
    ids = np.arange(len(x), dtype=np.int64) * 3 + 100  # as after removals: ids are not rows
    found = find_duplicates(MatrixGallery(x, ids), THRESHOLD, block=64)
    want = brute_force(x, THRESHOLD)
    assert {(p.a, p.b) for p in found.pairs} == {(int(ids[a]), int(ids[b])) for a, b in want}
    assert sorted(found.groups) == sorted([[int(ids[i]) for i in g] for g in truth["groups"]])
    p = next(p for p in found.pairs if p.a == ids[3] and p.b == ids[10])
    assert p.score == pytest.approx(1.0, abs=1e-6) and p.path_a == f"/g/{ids[3]}.jpg"
    assert found.count == len(x) and not found.approximate and found.note == ""
    d = found.to_dict()
    assert d["pairs"][0]["score"] >= d["pairs"][-1]["score"] and d["groups"] == found.groups


def test_refusals():
    x, _ = planted(100)
    g = MatrixGallery(x, np.arange(100))
    for bad in (0, -0.5, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            find_duplicates(g, bad)
    with pytest.raises(ValueError, match="raise the threshold"):
        find_duplicates(g, 0.01, max_pairs=10)
    assert find_duplicates(MatrixGallery(x[:1], np.arange(1)), 0.9).pairs == []


def test_faiss_index_store_exact_and_ivfpq_flagged_approximate(tmp_path):
    x, truth = planted(n=800, dim=32)
    es = EmbeddingSet(x, [f"/g/{i}.jpg" for i in range(len(x))], [i % 4 for i in range(len(x))],
                      {"fingerprint": "synthetic", "dtype": "float32"})
    flat = build_index(es, tmp_path / "flat")
    flat.remove([11])  # ids stay, rows do not
    found = find_duplicates(GalleryIndex.load(tmp_path / "flat"), THRESHOLD)
    want = {p for p in brute_force(x, THRESHOLD) if 11 not in p}
    assert {(p.a, p.b) for p in found.pairs} == want
    assert [3, 10] in found.groups and [40, 41, 42] in found.groups and not found.approximate
    assert next(p for p in found.pairs if (p.a, p.b) == (5, 20)).path_b == "/g/20.jpg"
    pq = build_index(es, tmp_path / "pq", kind="ivfpq", nlist=8, m=8, nbits=4, nprobe=8, refine="none")
    assert approximate_vectors(pq) and not approximate_vectors(flat)
    approx = find_duplicates(pq, 0.9)
    assert approx.approximate and "approximate" in approx.note
    assert (3, 10) in {(p.a, p.b) for p in approx.pairs}  # exact copies share their PQ codes
