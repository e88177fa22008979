"""dva.evaluation: what `dva eval` and the Python API score, against dva.metrics on the same vectors."""
from __future__ import annotations

import numpy as np
import pytest

from dva.data import DatasetWarning
from dva.data.records import ImageRecord, Split
from dva.evaluation import evaluate
from dva.metrics import retrieval_metrics
from dva.runtime.protocol import EmbedderLike


class TableEmbedder:
    """Embeds a path by looking it up: known vectors, so the expected metrics are exact."""

    fingerprint, img_size, transform = "table", 0, None

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors
        self.dim = len(next(iter(vectors.values())))
        self.calls: list[list[str]] = []

    def embed_paths(self, paths, batch_size=64, num_workers=0, progress=True):
        self.calls.append(list(paths))
        return np.stack([self.vectors[p] for p in paths]).astype(np.float32)

    def embed_tensor(self, x):  # pragma: no cover - not used here
        raise NotImplementedError

    def embed_pil(self, images):  # pragma: no cover
        raise NotImplementedError

    def activation_maps(self, x, adapted=True):  # pragma: no cover
        raise NotImplementedError


def _split(n_train=12, n_test=20, query_gallery=False, seed=0):
    rng = np.random.default_rng(seed)
    recs = {"train": [ImageRecord(f"tr{i}.jpg", i % 3) for i in range(n_train)],
            "test": [ImageRecord(f"te{i}.jpg", 3 + i % 4) for i in range(n_test)]}
    vecs = {r.path: rng.normal(size=8) + 3 * np.eye(8)[r.label] for rs in recs.values() for r in rs}
    q = g = None
    if query_gallery:
        q, g = recs["test"][:6], recs["test"][6:]
    split = Split("toy", "open", recs["train"], recs["test"], {i: str(i) for i in range(7)}, q, g)
    return split, TableEmbedder(vecs)


def test_leave_one_out_equals_metrics_on_the_same_vectors():
    split, emb = _split()
    assert isinstance(emb, EmbedderLike)
    ev = evaluate(emb, split)
    x = np.stack([emb.vectors[r.path] for r in split.test])
    assert ev.mode == "leave-one-out" and ev.classes == 4 and ev.stats["queries"] == 20
    assert ev.metrics == retrieval_metrics(x, [r.label for r in split.test])
    assert emb.calls == [[r.path for r in split.test]]  # the test images, in order, once


def test_query_gallery_when_the_split_has_both():
    split, emb = _split(query_gallery=True)
    ev = evaluate(emb, split, ks=(1, 2))
    q = np.stack([emb.vectors[r.path] for r in split.query])
    g = np.stack([emb.vectors[r.path] for r in split.gallery])
    want = retrieval_metrics(q, [r.label for r in split.query], (1, 2), gallery_embeddings=g,
                             gallery_labels=[r.label for r in split.gallery])
    assert ev.mode == "query-gallery" and ev.metrics == want and set(ev.metrics) >= {"recall@1", "recall@2"}
    assert ev.gallery_embeddings.shape == (14, 8) and ev.embeddings.shape == (6, 8)


def test_train_split_and_argument_errors():
    split, emb = _split()
    ev = evaluate(emb, split, which="train")
    assert ev.classes == 3 and ev.embeddings.shape == (12, 8)
    with pytest.raises(ValueError, match="which"):
        evaluate(emb, split, which="val")
    with pytest.raises(ValueError, match="batch size"):
        evaluate(emb, split, batch_size=0)


def test_singleton_classes_are_refused_before_embedding():
    split, emb = _split()
    split.test = [ImageRecord(f"te{i}.jpg", 3 + i) for i in range(4)]  # one image per class
    with pytest.raises(ValueError, match="single image"):
        evaluate(emb, split)
    assert emb.calls == []  # refused before any image was embedded


# --------------------------------------------------------------------------- splits that cannot be scored
def test_a_two_class_open_split_is_refused_before_embedding(tmp_path):
    # Issue 24: two class folders, open protocol -> one test class -> R@1 100.00 was printed.
    from PIL import Image

    from dva.data import load_split

    for c in ("Fox_Sparrow", "Henslow_Sparrow"):
        for i in range(6):
            (tmp_path / c).mkdir(exist_ok=True)
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / c / f"{i}.png")
    split = load_split("folder", str(tmp_path), "open")
    emb = TableEmbedder({r.path: np.ones(4) for r in split.test})
    with pytest.raises(ValueError) as err:
        evaluate(emb, split)
    assert emb.calls == []  # no image was embedded to learn it
    msg = str(err.value)
    assert msg.startswith("folder (open) test split: the split has 1 class(es) ('Henslow_Sparrow'), which cannot "
                          "measure retrieval")
    assert "--protocol closed" in msg and "at least 4" in msg


def test_one_query_class_in_query_gallery_mode_is_refused():
    split, emb = _split(query_gallery=True)
    split.query = [r for r in split.query if r.label == 3]
    with pytest.raises(ValueError, match=r"query/gallery split: the split has 1 class\(es\) \('3'\)"):
        evaluate(emb, split)
    assert emb.calls == []


def test_a_class_with_one_image_is_excluded_loudly_in_leave_one_out():
    split, emb = _split()
    split.test = split.test[:-3] + [ImageRecord("lone.jpg", 9)]  # classes 3-6 of 4-5 images, and 9 with one
    emb.vectors["lone.jpg"] = np.full(8, 0.1)
    split.class_names[9] = "Lonely_Warbler"
    with pytest.warns(DatasetWarning, match=r"1 of 5 query classes have a single image .*'Lonely_Warbler'") as w:
        ev = evaluate(emb, split)
    assert ev.stats == {"queries": 18, "scored_queries": 17, "excluded_queries": 1}
    assert ev.warnings == [str(w[0].message)]
    assert "EXCLUDED from every metric (scored: 17 of 18 queries) and stay in the gallery" in ev.warnings[0]
    x = np.stack([emb.vectors[r.path] for r in split.test])
    assert ev.metrics == retrieval_metrics(x, [r.label for r in split.test])  # the lone image stays a distractor
    assert ev.classes == 5


def test_fewer_than_two_classes_left_to_score_is_refused():
    split, emb = _split()
    split.test = [ImageRecord("a0.jpg", 3), ImageRecord("a1.jpg", 3), ImageRecord("b.jpg", 4), ImageRecord("c.jpg", 5)]
    with pytest.raises(ValueError, match=r"only 1 of 3 query classes can be scored.*'4', '5'"):
        evaluate(emb, split)
    assert emb.calls == []


def test_query_class_absent_from_the_gallery_is_excluded_loudly():
    split, emb = _split(query_gallery=True)
    split.gallery = [r for r in split.gallery if r.label != 3]
    with pytest.warns(DatasetWarning, match=r"1 of 4 query classes have no image in the gallery: '3'"):
        ev = evaluate(emb, split)
    assert ev.stats["excluded_queries"] == sum(r.label == 3 for r in split.query) == 2
