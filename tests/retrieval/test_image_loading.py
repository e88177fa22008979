"""Strict image loading (dva.retrieval.store.images): odd images embedded exactly, broken ones reported."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from dva.retrieval.store import embed_gallery, list_images, load_embeddings
from dva.retrieval.store.images import ImageLoadError, load_image_strict


def _rgb(seed: int, w: int, h: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def odd_gallery(tmp_path: Path) -> tuple[Path, dict[str, str], list[str]]:
    """A folder of good-but-odd and broken images; returns (dir, bad name -> reason hint, good)."""
    d = tmp_path / "odd"
    d.mkdir()
    _rgb(0, 48, 40).save(d / "a_normal.png")
    _rgb(1, 50, 30).convert("L").save(d / "b_gray.png")
    _rgb(2, 40, 44).convert("CMYK").save(d / "c_cmyk.jpg", "JPEG")
    _rgb(3, 1, 1).save(d / "d_1x1.png")
    _rgb(4, 10_000, 6).save(d / "e_wide.png")
    _rgb(5, 30, 30).convert("RGBA").save(d / "f_rgba.png")
    _rgb(6, 30, 30).convert("P").save(d / "g_palette.gif")
    buf = io.BytesIO()
    _rgb(7, 64, 64).save(buf, "JPEG", quality=95)
    (d / "x_truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "y_text.png").write_text("this is not an image\n")
    (d / "z_empty.jpg").write_bytes(b"")
    good = ["a_normal.png", "b_gray.png", "c_cmyk.jpg", "d_1x1.png", "e_wide.png", "f_rgba.png",
            "g_palette.gif"]
    bad = {"x_truncated.jpg": "truncated", "y_text.png": "cannot identify",
           "z_empty.jpg": "cannot identify"}
    return d, bad, good


def test_bad_images_are_reported_and_good_rows_are_exact(embedder, odd_gallery, tmp_path):
    d, bad, good = odd_gallery
    assert Image.open(d / "c_cmyk.jpg").mode == "CMYK"
    out = tmp_path / "emb"
    # batches of 3 mix good and bad images; shards of 4 put bad ones in different shards
    s = embed_gallery(embedder, list_images(d), out, batch_size=3, shard_size=4, progress=False)
    assert s.count == len(good)
    skipped = [json.loads(x) for x in (out / "skipped.jsonl").read_text().splitlines()]
    assert {Path(r["path"]).name for r in skipped} == set(bad)
    for r in skipped:
        assert bad[Path(r["path"]).name] in r["reason"].lower(), r
    assert json.loads((out / "meta.json").read_text())["skipped"] == len(bad)

    es = load_embeddings(out)
    assert [Path(p).name for p in es.paths] == good
    for p, row in zip(es.paths, es.vectors):
        with Image.open(p) as im:
            alone = embedder.embed_pil([im.convert("RGB")])[0]
        np.testing.assert_allclose(row, alone, atol=1e-5, err_msg=p)


def test_missing_file_in_list_is_skipped(embedder, odd_gallery, tmp_path):
    d, _, _ = odd_gallery
    lst = tmp_path / "list.txt"
    lst.write_text(f"{d / 'a_normal.png'}\n{d / 'missing.png'}\n")
    s = embed_gallery(embedder, list_images(lst), tmp_path / "emb", progress=False)
    assert s.count == 1 and s.skipped == [{"path": str(d / "missing.png"), "reason": "file not found"}]


def test_strict_loader_refuses_truncated_mode(odd_gallery, monkeypatch):
    d, _, _ = odd_gallery
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        load_image_strict(d / "a_normal.png")


def test_a_folder_is_not_an_image(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(ImageLoadError) as err:
        load_image_strict(tmp_path / "photos")
    assert err.value.reason == "is a folder, not an image file"
    with pytest.raises(ImageLoadError, match="is a folder"):
        load_image_strict(tmp_path / "photos", draft_min_side=32)
    with pytest.raises(ImageLoadError) as err:
        load_image_strict(tmp_path / "nothing.jpg")
    assert err.value.reason == "file not found"


def test_all_images_bad_gives_clear_index_error(embedder, tmp_path):
    from dva.retrieval.index import build_index

    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.png").write_text("nope")
    s = embed_gallery(embedder, list_images(d), tmp_path / "emb", progress=False)
    assert s.count == 0 and len(s.skipped) == 1
    with pytest.raises(ValueError, match="no vectors"):
        build_index(tmp_path / "emb", tmp_path / "idx")
