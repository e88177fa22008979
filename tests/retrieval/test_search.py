"""Searching (dva.retrieval.search and ``dva search``): batched embedding, arguments, folders, the table."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dva.retrieval.index import build_index
from dva.retrieval.search import Hit, QueryResult, embed_images
from dva.retrieval.store import GalleryItem, embed_gallery
from dva_cli import _model
from dva_cli.cli import main
from dva_cli.commands.search import format_results


@pytest.fixture
def index_dir(embedder, gallery, tmp_path, monkeypatch):
    paths, labels = gallery
    embed_gallery(embedder, [GalleryItem(str(p), f"class {lab}") for p, lab in zip(paths, labels)],
                  tmp_path / "emb", progress=False)
    build_index(tmp_path / "emb", tmp_path / "idx")
    monkeypatch.setattr(_model, "embedder_from_args", lambda args: embedder)
    return tmp_path / "idx"


def test_embed_images_is_embed_pil_in_batches(embedder, gallery):
    paths, _ = gallery
    images = [Image.open(p) for p in paths[:10]]
    embedder.calls = 0
    got = embed_images(embedder, images, batch_size=4)
    assert embedder.calls == 3, "10 images in batches of 4: three forward passes"
    np.testing.assert_array_equal(got, embedder.embed_pil(images))
    assert got.dtype == np.float32 and embed_images(embedder, []).shape == (0, embedder.dim)


@pytest.mark.parametrize("k", ["0", "-1", "two"])
def test_k_below_one_is_a_usage_error(index_dir, gallery, k, capsys):
    paths, _ = gallery
    with pytest.raises(SystemExit) as exc:
        main(["search", "--index", str(index_dir), "--k", k, str(paths[0])])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--k" in err and (">= 1" in err) and "Traceback" not in err


def test_a_folder_query_says_how_to_pass_its_images(index_dir, gallery, tmp_path, capsys):
    paths, _ = gallery
    folder = paths[0].parent
    assert main(["search", "--index", str(index_dir), str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder} is a folder" in err and "*.jpg" in err and "--query-list" in err
    assert "file not found" not in err
    assert main(["search", "--index", str(index_dir), str(tmp_path / "nope.jpg")]) == 2
    assert "nope.jpg: file not found" in capsys.readouterr().err
    lst = tmp_path / "queries.txt"
    lst.write_text(f"{paths[3]}\n{paths[5]}\n")
    assert main(["search", "--index", str(index_dir), "--query-list", str(lst), "--k", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["hits"][0]["path"] for r in out] == [str(paths[3].resolve()), str(paths[5].resolve())]
    assert main(["search", "--index", str(index_dir)]) == 2
    assert "give query images" in capsys.readouterr().err


def test_long_labels_are_cut_so_the_path_column_aligns():
    long = "Black-footed Albatross (juvenile, Pacific coast)\tsecond line\nthird"
    hits = [Hit(1, 0, 0.99, "/g/a.jpg", long), Hit(2, 1, 0.5, "/g/b.jpg", "wren"), Hit(3, 2, 0.25, "/g/c.jpg", None)]
    lines = format_results([QueryResult("/q.jpg", hits)]).splitlines()
    header, rows = lines[1], lines[2:]
    column = header.index("gallery image")
    assert [r.index("/g/") for r in rows] == [column] * 3, "\n".join(lines)
    assert "Black-footed Albatros..." in rows[0] and len(lines) == 5  # cut to 24 characters
    assert rows[1].split() == ["2", "0.5000", "1", "wren", "/g/b.jpg"]  # rank, cosine, id, label, path
    # A tab or newline inside a short label becomes a space: the row stays one row.
    tabbed = format_results([QueryResult("/q.jpg", [Hit(1, 0, 0.9, "/g/a.jpg", "a\tb\nc")])]).splitlines()
    assert len(tabbed) == 3 and "\t" not in tabbed[2] and tabbed[2].split()[3:6] == ["a", "b", "c"]
    # short labels: a narrow column, nothing cut
    narrow = format_results([QueryResult("/q.jpg", hits[1:2])]).splitlines()
    assert narrow[2].index("/g/") == narrow[1].index("gallery image") == len("  rank   cosine  id  label  ")
    # No hit (an empty gallery, or a filter no image passes): said, not a bare header.
    empty = format_results([QueryResult("/q.jpg", [])]).splitlines()
    assert empty == ["query /q.jpg", "  no hits: the gallery is empty, or no image of it passes --where"]


def test_cli_table_aligns_with_real_labels(index_dir, gallery, capsys):
    paths, _ = gallery
    assert main(["search", "--index", str(index_dir), "--k", "3", str(paths[0])]) == 0
    lines = capsys.readouterr().out.splitlines()
    column = lines[1].index("gallery image")
    assert len(lines) == 5 and all(r.index(str(paths[0].parent.parent)) == column for r in lines[2:])


# ----------------------------------------------------------------------------- a living gallery (issue 27)
@pytest.fixture
def live_dirs(embedder, gallery, tmp_path, monkeypatch):
    """An index of the first 18 images (extra columns source, day) and the embeddings of the other 6."""
    paths, labels = gallery
    items = [GalleryItem(str(p), lab, {"source": f"trap{i % 2}", "day": None if i % 3 else "mon"})
             for i, (p, lab) in enumerate(zip(paths, labels))]
    embed_gallery(embedder, items[:18], tmp_path / "emb", progress=False)
    embed_gallery(embedder, items[18:], tmp_path / "more", progress=False)
    build_index(tmp_path / "emb", tmp_path / "idx")
    monkeypatch.setattr(_model, "embedder_from_args", lambda args: embedder)
    return tmp_path / "idx", tmp_path / "more"


def test_cli_add_remove_and_a_filtered_search(live_dirs, gallery, tmp_path, capsys):
    paths, labels = gallery
    idx, more = live_dirs
    assert main(["index", "--add", str(more), "--out", str(idx)]) == 0
    out = capsys.readouterr().out
    assert f"added 6 images from {more} (ids 18..23)" in out and "now holds 24" in out
    assert main(["index", "--add", str(more), "--out", str(idx)]) == 2  # the same images again
    assert "already holds 6 of these images" in capsys.readouterr().err
    ids_file = tmp_path / "gone.txt"
    ids_file.write_text("# ids to drop\n1\n\n20\n")
    assert main(["index", "--remove", str(ids_file), "--out", str(idx)]) == 0
    assert "removed 2 items" in capsys.readouterr().out
    assert main(["index", "--remove", "2,3,99", "--out", str(idx)]) == 0
    out = capsys.readouterr().out
    assert "removed 2 items" in out and "1 of the ids given were not in it" in out and "now holds 20" in out
    assert main(["search", "--index", str(idx), "--k", "30", "--json", str(paths[0]),
                 "--where", "source = 'trap0' and label != 2"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    want = {i for i in range(24) if i % 2 == 0 and labels[i] != 2} - {1, 2, 3, 20}
    assert {h["id"] for h in hits} == want and len(hits) == len(want)
    assert all(h["source"] == "trap0" and h["day"] == (None if h["id"] % 3 else "mon") for h in hits)
    assert hits[0]["path"] == str(paths[0].resolve()) and hits[0]["id"] == 0


def test_cli_index_and_search_argument_errors(live_dirs, gallery, make_embedder, tmp_path, capsys):
    paths, _ = gallery
    idx, more = live_dirs
    embed_gallery(make_embedder(seed=1), [GalleryItem(str(p)) for p in paths[18:]], tmp_path / "other",
                  progress=False)
    assert main(["index", "--add", str(tmp_path / "other"), "--out", str(idx)]) == 2
    err = capsys.readouterr().err
    assert "model fingerprint" in err and str(tmp_path / "other") in err and "Traceback" not in err
    assert main(["index", "--remove", "1,x", "--out", str(idx)]) == 2
    assert "neither comma-separated ids" in capsys.readouterr().err
    assert main(["index", "--add", str(more)]) == 2
    assert "give --out INDEX" in capsys.readouterr().err
    assert main(["index", "--add", str(more), "--store", "milvus", "--out", str(idx)]) == 2
    assert "--store milvus needs --uri" in capsys.readouterr().err
    assert main(["index", "--add", str(more), "--out", str(idx), "--uri", "x.db"]) == 2
    assert "--uri is for --store milvus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["index", "--add", str(more), "--remove", "1", "--out", str(idx)])
    assert "not allowed with" in capsys.readouterr().err
    assert main(["search", "--index", str(idx), str(paths[0]), "--where", "colour = 'red'"]) == 2
    err = capsys.readouterr().err
    assert "unknown column 'colour'" in err and "id, path, label, source, day" in err and "Traceback" not in err
    assert main(["search", "--index", str(idx), str(paths[0]), "--where", "source = 'nowhere'", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["hits"] == []


def test_cli_milvus_store_build_add_remove_and_filtered_search(embedder, gallery, tmp_path, monkeypatch, capsys):
    """The same commands with ``--store milvus --uri FILE.db`` (Milvus Lite, embedded)."""
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    paths, labels = gallery
    items = [GalleryItem(str(p), lab, {"source": f"trap{i % 2}"}) for i, (p, lab) in enumerate(zip(paths, labels))]
    embed_gallery(embedder, items[:18], tmp_path / "emb", progress=False)
    embed_gallery(embedder, items[18:], tmp_path / "more", progress=False)
    monkeypatch.setattr(_model, "embedder_from_args", lambda args: embedder)
    uri = str(tmp_path / "gallery.db")
    store = ["--store", "milvus", "--uri", uri]
    assert main(["index", "--embeddings", str(tmp_path / "emb"), *store]) == 0
    assert "indexed 18 vectors" in capsys.readouterr().out
    assert main(["index", "--add", str(tmp_path / "more"), *store]) == 0
    assert "added 6 images" in capsys.readouterr().out
    assert main(["index", "--remove", "0,2", *store]) == 0
    assert "removed 2 items" in capsys.readouterr().out
    assert main(["search", *store, "--k", "30", "--json", str(paths[4]), "--where", "source = 'trap0'"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["hits"]
    assert {h["id"] for h in hits} == set(range(4, 24, 2)) and all(h["source"] == "trap0" for h in hits)
    assert hits[0]["path"] == str(paths[4].resolve())


@pytest.mark.parametrize("cols", [("1st",), ("ID",), ("and",), ("date", "Date")])
def test_one_column_name_rule_for_lists_and_indexes(cols, tmp_path):
    """The items table checks extra columns with the list CSV's own rule: the same refusals, the same words."""
    from dva.retrieval.index.items import check_columns
    from dva.retrieval.store import EmbeddingSet
    from dva.retrieval.store.gallery import check_column_names

    with pytest.raises(ValueError) as table:
        check_columns(cols, "idx/index.json")
    with pytest.raises(ValueError) as listed:
        check_column_names(cols, "idx/index.json", fix="rename it in the list CSV's header")
    assert str(table.value) == str(listed.value) and str(table.value).startswith("idx/index.json: column ")
    x = np.eye(2, 4, dtype=np.float32)
    es = EmbeddingSet(x, ["/g/a.png", "/g/b.png"], [None, None], {"fingerprint": "f"},
                      extras=[dict.fromkeys(cols, "v")] * 2, columns=cols)
    with pytest.raises(ValueError, match=f"column \\d {cols[-1]!r}: "):  # a filter keyword included: unfilterable
        build_index(es, tmp_path / "idx")
    assert not (tmp_path / "idx" / "index.json").exists()
