"""Embeddings read back (dva.retrieval.store.embeddings) and the one fingerprint/dim/len definition."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dva.retrieval.index import GalleryIndex, build_index
from dva.retrieval.meta import DescribedVectors
from dva.retrieval.store import (
    EmbeddingSet, EmbeddingShards, GalleryItem, embed_gallery, list_images, load_embeddings, open_embeddings,
)


def _set(n: int = 6, dim: int = 4, **meta) -> EmbeddingSet:
    x = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    return EmbeddingSet(x, [f"/g/{i}.jpg" for i in range(n)], [i % 2 for i in range(n)],
                        {"fingerprint": "f1", **meta})


def test_every_vector_collection_describes_itself_the_same_way(embedder, gallery, tmp_path):
    paths, _ = gallery
    embed_gallery(embedder, [GalleryItem(str(p)) for p in paths], tmp_path / "emb", progress=False, shard_size=10)
    shards = open_embeddings(tmp_path / "emb")
    gi = build_index(tmp_path / "emb", tmp_path / "idx")
    loaded = GalleryIndex.load(tmp_path / "idx")
    in_memory = _set()
    for obj in (shards, gi, loaded, in_memory, EmbeddingShards.of(in_memory)):
        assert isinstance(obj, DescribedVectors)
    assert {(o.fingerprint, o.dim, len(o)) for o in (shards, gi, loaded)} == {(embedder.fingerprint, embedder.dim, 24)}
    assert (in_memory.fingerprint, in_memory.dim, len(in_memory)) == ("f1", 4, 6)
    assert len(shards.shards) == 3 and [len(a) for a in shards.shards] == [10, 10, 4]


def test_embedding_set_checks_its_shape_and_takes_dim_from_the_vectors():
    es = _set(dtype="float32")
    assert es.meta == {"fingerprint": "f1", "dtype": "float32", "dim": 4}
    with pytest.raises(ValueError, match="meta says dim 5, the vectors have 4"):
        EmbeddingSet(np.zeros((2, 4), np.float32), ["a", "b"], [None, None],
                     {"fingerprint": "f", "dim": 5})
    with pytest.raises(ValueError, match="one path and label per row"):
        EmbeddingSet(np.zeros((3, 4), np.float32), ["a", "b"], [None, None], {"fingerprint": "f"})


def test_shards_read_chosen_rows_and_chunks_in_order():
    es = _set(n=9)
    parts = EmbeddingShards([es.vectors[:4], es.vectors[4:7].astype(np.float16), es.vectors[7:]], es.paths,
                            es.labels, es.meta)
    ids = np.array([0, 3, 4, 6, 8])
    want = np.concatenate([es.vectors[:4], es.vectors[4:7].astype(np.float16).astype(np.float32), es.vectors[7:]])
    np.testing.assert_array_equal(parts.rows(ids), want[ids])
    np.testing.assert_array_equal(np.concatenate(list(parts.chunks())), want)
    assert all(c.dtype == np.float32 for c in parts.chunks())


def test_extras_default_to_one_empty_dict_per_row_and_are_checked():
    es = _set(n=3)
    assert es.extras == [{}, {}, {}] and es.columns == ()
    assert EmbeddingShards.of(es).extras == [{}, {}, {}]
    x = np.zeros((2, 4), np.float32)
    with_cols = EmbeddingSet(x, ["a", "b"], [None, None], {"fingerprint": "f"}, columns=("source",))
    assert with_cols.extras == [{"source": None}, {"source": None}]
    partial = EmbeddingSet(x, ["a", "b"], [None, None], {"fingerprint": "f"}, [{}, {"source": "s"}], ("source",))
    assert partial.extras == [{"source": None}, {"source": "s"}]  # every row names every column
    with pytest.raises(ValueError, match="1 extras for 2 rows"):
        EmbeddingSet(x, ["a", "b"], [None, None], {"fingerprint": "f"}, [{}])
    with pytest.raises(ValueError, match=r"name columns \['date'\] not in columns \['source'\]"):
        EmbeddingSet(x, ["a", "b"], [None, None], {"fingerprint": "f"}, [{"date": "1"}, {}], ("source",))


def test_extra_columns_flow_from_the_list_through_embed(embedder, gallery, tmp_path):
    paths, _ = gallery
    lines = ["path,label,source,date"] + [f"{p},c{i % 3},{'trap' + str(i % 2) if i % 5 else ''},d{i}"
                                          for i, p in enumerate(paths)]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    embed_gallery(embedder, list_images(tmp_path / "list.csv"), tmp_path / "emb", progress=False, shard_size=10)
    for loaded in (open_embeddings(tmp_path / "emb"), load_embeddings(tmp_path / "emb")):
        assert loaded.columns == ("source", "date")
        assert loaded.extras[0] == {"source": None, "date": "d0"}
        assert loaded.extras[7] == {"source": "trap1", "date": "d7"}
        assert loaded.labels[4] == "c1"
    rows = [json.loads(line) for line in (tmp_path / "emb" / "items.jsonl").read_text().splitlines()]
    assert rows[3] == {"id": 3, "path": str(paths[3]), "label": "c0", "source": "trap1", "date": "d3"}
    first_input = json.loads((tmp_path / "emb" / "inputs.jsonl").read_text().splitlines()[1])
    assert first_input == {"path": str(paths[1]), "label": "c1", "source": "trap1", "date": "d1"}


def test_old_directories_without_columns_load_with_none(embedder, gallery, tmp_path):
    paths, _ = gallery
    embed_gallery(embedder, [GalleryItem(str(p)) for p in paths], tmp_path / "emb", progress=False)
    meta = json.loads((tmp_path / "emb" / "meta.json").read_text())
    assert "columns" not in meta and "extras_sha256" not in meta  # the format of earlier runs, unchanged
    es = load_embeddings(tmp_path / "emb")
    assert es.columns == () and es.extras == [{}] * 24
