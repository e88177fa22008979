"""Property-based fuzzing of every reader a user's files reach: no traceback, no silent garbage.

Generated and mutated images, image lists, dataset CSVs, box CSVs, config overrides, index and
checkpoint files go to the library's readers. Each must either return something consistent or
raise the one error type the command line turns into a one-line message (``ValueError`` or
``FileNotFoundError``; ``ImageLoadError`` for images, which the embedder reports and skips).
The number of generated cases per property is ``FUZZ_EXAMPLES`` below (docs/BENCHMARKS.md gives
the total of a run).
"""
from __future__ import annotations

import io
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

FUZZ_EXAMPLES = 60
USER_ERRORS = (ValueError, FileNotFoundError)
fuzz = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


def _seed_image(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


SEEDS = {"PNG": _seed_image("PNG"), "JPEG": _seed_image("JPEG"), "GIF": _seed_image("GIF")}


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """A file with some bytes flipped, a cut, or junk appended."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data) + draw(st.binary(max_size=16))


@fuzz
@given(fmt=st.sampled_from(sorted(SEEDS)), data=st.data())
def test_images_decode_or_are_refused(fmt, data):
    from dva.retrieval.store import ImageLoadError, load_image_strict

    blob = data.draw(mutated(SEEDS[fmt]))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"x.{fmt.lower()}"
        p.write_bytes(blob)
        try:
            img = load_image_strict(p)
        except ImageLoadError as exc:
            assert str(p) in str(exc)
            return
        assert img.mode == "RGB" and img.width > 0 and img.height > 0


line = st.lists(st.sampled_from(list("ab/.,\"' #\t\\é\r") + ["a.png", "../", "x.jpg,1", "path,label"]),
                max_size=8).map("".join)


@fuzz
@given(lines=st.lists(line, max_size=8), encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]))
def test_image_lists_parse_or_name_the_file(lines, encoding):
    from dva.retrieval.store import read_image_list

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "list.csv"
        p.write_bytes("\n".join(lines).encode(encoding, errors="replace"))
        try:
            items = read_image_list(p)
        except USER_ERRORS as exc:
            assert str(p) in str(exc)
            return
        paths = [it.path for it in items]
        assert items and all(Path(q).is_absolute() for q in paths) and len(set(paths)) == len(paths)


@fuzz
@given(rows=st.lists(st.lists(st.sampled_from(["a.png", "b.png", "x", "1", "-3", "2.5", "", "train", "test",
                                               "query", "path", "label", "nan"]), max_size=7), max_size=8),
       protocol=st.sampled_from(["open", "closed"]))
def test_dataset_csv_reads_or_is_refused(rows, protocol):
    from dva.data import load_split

    with tempfile.TemporaryDirectory() as d:
        for name in ("a.png", "b.png"):
            Image.new("RGB", (4, 4)).save(Path(d) / name)
        p = Path(d) / "labels.csv"
        p.write_text("\n".join(",".join(r) for r in rows))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                split = load_split("csv", str(p), protocol)
        except USER_ERRORS:
            return
        assert split.train and split.test
        assert all(Path(r.path).is_file() for r in split.train + split.test)


@fuzz
@given(text=st.lists(st.one_of(
    st.lists(st.sampled_from(["img.jpg", "b.png", "1", "0", "-5", "2.5", "", "x", "path"]), max_size=7),
    st.tuples(st.sampled_from(["img.jpg", "b.png"]),
              st.lists(st.sampled_from(["1", "0", "-5", "2.5", "1e400", "nan", "inf", " 3 "]), min_size=4, max_size=5))
    .map(lambda t: [t[0], *t[1]])).map(",".join), max_size=6).map("\n".join))
def test_box_csv_reads_or_names_the_line(text):
    from dva.opa.cache import read_boxes_file

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "boxes.csv"
        p.write_text(text)
        try:
            boxes = read_boxes_file(p)
        except USER_ERRORS as exc:
            assert str(p) in str(exc)
            return
        for box, score in boxes.values():  # garbage numbers must not pass as a box
            assert len(box) == 4 and all(np.isfinite(box)) and box[2] > 0 and box[3] > 0
            assert isinstance(score, float) and np.isfinite(score)


def _config_keys() -> list[str]:
    import dataclasses

    from dva.config import DVAConfig

    cfg = DVAConfig()
    return [f"{f.name}.{g.name}" for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))
            for g in dataclasses.fields(getattr(cfg, f.name))]


def _field_type(key: str) -> type:
    """The plain type of config field ``section.name`` (``float | None`` -> float)."""
    import typing

    from dva.config import DVAConfig

    section, name = key.split(".")
    t = typing.get_type_hints(type(getattr(DVAConfig(), section)))[name]
    return next((a for a in typing.get_args(t) if a is not type(None)), t)


@fuzz
@given(pairs=st.lists(st.tuples(st.sampled_from(_config_keys() + ["train.nope", "bogus"]),
                                st.sampled_from(["-1", "0", "1", "1e9", "100000", "nan", "inf", "-inf", "true", "x", "",
                                                 "-2:", "[1, 2]", "{a: 1}", "cuda:7", "0.5", "auto"])),
                      max_size=4))
def test_config_overrides_validate_or_are_refused(pairs):
    """An accepted override is in the config as typed, with the field's type, within its bounds;
    a refused one is named in the one-line message."""
    from dva.config import CHOICES, MAX_BATCH, RANGES, load_config

    tokens = [t for k, v in pairs for t in (f"--{k}", v)]
    try:
        cfg = load_config(None, tokens)
    except ValueError as exc:
        assert any(k in str(exc) for k, _ in pairs), (pairs, str(exc))
        return
    for key, token in dict(pairs).items():  # the last value of a key wins
        section, name = key.split(".")
        value, t = getattr(getattr(cfg, section), name), _field_type(key)
        assert type(value) is t, (key, token, value)
        if t is str:
            assert value == token, (key, token, value)  # text stays as typed
        elif t is bool:
            assert value is (token.lower() in ("true", "1")), (key, token, value)
        else:
            assert value == float(token) and np.isfinite(value), (key, token, value)
        if key in RANGES:
            lo, lo_ok, hi, _ = RANGES[key]
            assert (value >= lo if lo_ok else value > lo) and (hi is None or value <= hi), (key, value)
        if key in CHOICES:
            assert value in CHOICES[key], (key, value)
    assert cfg.train.classes_per_batch * cfg.train.images_per_class <= MAX_BATCH


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    from dva.retrieval.index import build_index
    from dva.retrieval.store import EmbeddingSet

    x = np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    es = EmbeddingSet(x, [f"/g/{i}.jpg" for i in range(12)], [i % 3 for i in range(12)],
                      {"fingerprint": "fuzz", "dtype": "float32"})
    out = tmp_path_factory.mktemp("idx")
    build_index(es, out / "idx")
    return out / "idx"


@fuzz
@given(data=st.data())
def test_index_files_load_or_are_refused(index_dir, data):
    import shutil

    from dva.retrieval.index import GalleryIndex

    with tempfile.TemporaryDirectory() as d:
        dst = Path(d) / "idx"
        shutil.copytree(index_dir, dst)
        target = data.draw(st.sampled_from(sorted(dst.iterdir())))
        target.write_bytes(data.draw(mutated(target.read_bytes())))
        try:
            idx = GalleryIndex.load(dst)
        except USER_ERRORS:
            return
    # Loaded: then it must be the undamaged index, answer for answer (a flipped byte that left the
    # content equal, e.g. JSON whitespace); anything else had to be refused.
    good = GalleryIndex.load(index_dir)
    queries = good.index.reconstruct_n(0, len(good))
    assert (idx.paths, idx.labels, idx.fingerprint, idx.meta) == (good.paths, good.labels, good.fingerprint, good.meta)
    for got, want in zip(idx.search(queries, len(good)), good.search(queries, len(good))):
        np.testing.assert_array_equal(got, want)


@fuzz
@given(data=st.data())
def test_checkpoints_load_or_are_refused(data):
    import torch
    from safetensors.torch import save

    from dva.checkpoint import FORMAT, read_checkpoint

    meta = {"format": FORMAT, "config": json.dumps({"ica": {"rank": 2}}), "fingerprint": "f", "num_classes": "3"}
    drop = data.draw(st.sets(st.sampled_from(sorted(meta))))
    blob = save({"proxies": torch.zeros(3, 4)}, metadata={k: v for k, v in meta.items() if k not in drop})
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "ck.safetensors"
        p.write_bytes(data.draw(mutated(blob)) if data.draw(st.booleans()) else blob)
        try:
            tensors, info = read_checkpoint(p)
        except USER_ERRORS as exc:
            assert str(p) in str(exc)
            return
        assert not drop and info["num_classes"] == 3 and info["config"].ica.rank == 2
