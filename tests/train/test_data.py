"""The data interface of the training loop (src/dva_train/data.py): one Batch record, two sources."""
import os

import numpy as np
import pytest
import torch

from dva.config import load_config
from dva.model import build_model
from dva_train.data import Batch, ImageBatches, PrefixBatches, build_batches, prepare_data
from dva_train.distributed import DistInfo
from dva_train.sampler import epoch_batches


def _setup(root, tmp_path, *extra):
    cfg = load_config(None, ["--data.dataset", "synthetic", "--data.root", str(root), "--output_dir", str(tmp_path),
                             "--backbone.img_size", "64", "--opa.box_source", "annotations",
                             "--train.classes_per_batch", "4", "--train.images_per_class", "2",
                             "--train.batch_size_eval", "32", *extra])
    torch.manual_seed(0)
    data = prepare_data(cfg)
    model = build_model(cfg, data.num_classes)
    boxes = {p: (b, 1.0) for p, b in data.annotated.items()}
    return cfg, data, model, build_batches(cfg, model, data, boxes, DistInfo(), progress=False)


@pytest.fixture(scope="module")
def both(synthetic_root, tmp_path_factory):
    t = tmp_path_factory.mktemp("data")
    return (_setup(synthetic_root, t / "a", "--train.cache_prefix", "auto"),
            _setup(synthetic_root, t / "b", "--train.cache_prefix", "off", "--train.augment", "none"))


def test_prepare_data_splits_open_set(synthetic_root, tmp_path):
    cfg = load_config(None, ["--data.dataset", "synthetic", "--data.root", str(synthetic_root),
                             "--train.classes_per_batch", "4"])  # checked against the 6 classes left by val_classes=2
    d = prepare_data(cfg)
    assert d.num_classes == 8 and len(d.train_paths) == 64 and len(d.eval_paths) == 64 and d.eval_name == "test"
    assert sorted(set(d.train_labels.tolist())) == list(range(8)) and len(d.annotated) == 64
    cfg.data.val_classes = 2
    v = prepare_data(cfg)
    assert v.num_classes == 6 and v.eval_name == "val" and len(v.eval_paths) == 16
    assert not set(v.eval_paths) & set(v.train_paths) and set(v.eval_paths) <= set(d.train_paths)
    cfg.data.val_classes = 8
    with pytest.raises(ValueError, match=r"data.val_classes=8 is too many: 8 training classes, 8 of them with 2 "
                                         r"or more images .* set --data\.val_classes 2 or 0"):
        prepare_data(cfg)
    cfg.data.val_classes = 7  # one class left to train on: refused the same way
    with pytest.raises(ValueError, match=r"data.val_classes=7 is too many: .* set --data\.val_classes 2 or 0"):
        prepare_data(cfg)
    cfg.data.val_classes = 6  # two left: allowed
    assert prepare_data(cfg).num_classes == 2


def _folder(tmp_path, classes, per_class, singles=(), keep=None):
    """A class-per-folder tree (the open protocol trains on the first half); ``singles``: classes left
    with one image; ``keep``: {class: images left}."""
    from dva.data import make_synthetic

    make_synthetic(str(tmp_path), num_classes=classes, per_class=per_class, size=32, seed=0)
    root = tmp_path / "images"
    for c, n in {**{c: 1 for c in singles}, **(keep or {})}.items():
        for f in sorted((root / f"class_{c:03d}").iterdir())[n:]:
            f.unlink()
    return root


def _folder_cfg(root, *extra):
    return load_config(None, ["--data.dataset", "folder", "--data.root", str(root), *extra])


def test_the_hold_out_skips_classes_of_one_image(tmp_path):
    # 24 folders: 12 training classes, auto holds out 2; the last two (10, 11) hold one image each:
    # unscorable, so the two before them (8, 9) are held out, and 10 and 11 stay in training.
    root = _folder(tmp_path, 24, 4, singles=(10, 11))
    d = prepare_data(_folder_cfg(root))
    held = sorted({p.split(os.sep)[-2] for p in d.eval_paths})
    assert d.eval_name == "val" and held == ["class_008", "class_009"] and d.val_classes == 2
    assert {p.split(os.sep)[-2] for p in d.train_paths} >= {"class_010", "class_011"}
    # Too few scorable classes: auto holds none out and says why; an explicit count is refused.
    root = _folder(tmp_path / "b", 24, 4, singles=range(1, 12))
    d = prepare_data(_folder_cfg(root))
    assert d.eval_name == "test" and d.val_classes == 0
    assert "12 training classes, 1 of them with 2 or more images" in d.val_note
    assert not d.select  # nothing is chosen on the test split
    with pytest.raises(ValueError, match=r"data.val_classes=2 is too many: .* set --data.val_classes 0"):
        prepare_data(_folder_cfg(root, "--data.val_classes", "2"))
    # Only the last two classes can be queried: holding them out would leave training nothing to learn
    # from, so auto holds none out (and the run trains on all 12).
    root = _folder(tmp_path / "c", 24, 4, singles=range(10))
    d = prepare_data(_folder_cfg(root))
    assert d.val_classes == 0 and d.num_classes == 12 and "2 of them with 2 or more images" in d.val_note


def test_an_empty_root_and_a_one_class_validation_split_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(_folder(tmp_path, 6, 2))  # class folders right here: an empty root must not read them
    with pytest.raises(ValueError, match="no root folder given .* --data.root PATH"):
        prepare_data(_folder_cfg(""))
    with pytest.raises(ValueError, match="data.val_classes=1: a validation split of one class"):
        _folder_cfg(".", "--data.val_classes", "1")


def test_the_batch_is_fitted_to_the_processes_and_the_repeat_note_reads_the_fitted_shape(tmp_path):
    root = _folder(tmp_path, 6, 3)  # 3 training classes of 3 images
    d = prepare_data(_folder_cfg(root))
    assert (d.batch.classes, d.batch.images) == (3, 4)  # the median (3) is below the asked 4: 4 kept
    assert any(n.startswith("train.images_per_class=4 but 3 of 3 training classes") for n in d.notes)
    d2 = prepare_data(_folder_cfg(root), world=8)
    assert d2.batch.size % 8 == 0 and (d2.batch.classes, d2.batch.images) == (3, 8)
    d3 = prepare_data(_folder_cfg(root, "--train.images_per_class", "2"))  # ceil(16 / 3) = 6, capped by the median 3
    assert (d3.batch.classes, d3.batch.images) == (3, 3)
    assert not any("repeat" in n for n in d3.notes)  # 3 images drawn of classes of 3: nothing repeats
    # Classes of 3, 12 and 12 images: 3 x 11 per batch; the note names the fitted 11, not the asked 4.
    d4 = prepare_data(_folder_cfg(_folder(tmp_path / "b", 6, 12, keep={0: 3})))
    assert (d4.batch.classes, d4.batch.images) == (3, 11)
    assert any(n.startswith("the batch draws 11 images per class but 1 of 3 training classes") for n in d4.notes)


def test_both_sources_give_the_same_batch_record(both):
    (cfg, data, model, cached), (_, _, _, online) = both
    assert isinstance(cached, PrefixBatches) and cached.from_prefix is True
    assert isinstance(online, ImageBatches) and online.from_prefix is False
    batches = epoch_batches(data.train_labels, 4, 2, cfg.train.seed, 0)
    for source in (cached, online):
        steps = list(source.epoch(0, batches, start=len(batches) - 2))  # the last two batches only
        assert len(steps) == 2
        b = steps[-1]
        assert isinstance(b, Batch) and b._fields == ("x", "disc", "bg", "keep", "labels")
        assert b.keep.dtype == torch.float32 and b.keep.tolist() == [1.0] * 8  # every synthetic image has a box
        assert b.labels.dtype == torch.int64 and b.labels.tolist() == data.train_labels[batches[-1]].tolist()
        assert b.disc.shape == b.x.shape == b.bg.shape and b.x.dtype == torch.float32
    assert steps[-1].x.shape == (8, 3, 64, 64)  # images
    h = next(cached.epoch(0, batches)).x
    assert h.shape[0] == 8 and h.shape[1:] != (3, 64, 64)  # activations of the frozen prefix
    with torch.no_grad():  # the objective can embed either input
        assert model.embed_from_prefix(h, normalize=True).shape == model.embed(steps[-1].x).shape == (8, model.dim)


def test_both_sources_embed_eval_and_train_sets_alike(both):
    (_, data, model, cached), (_, _, _, online) = both
    ea, eb = cached.embed_eval(model), online.embed_eval(model)
    assert ea.shape == eb.shape == (len(data.eval_paths), model.dim)
    np.testing.assert_allclose(np.linalg.norm(ea, axis=1), 1.0, atol=1e-5)
    assert float((ea * eb).sum(1).min()) > 0.999
    ta, tb = cached.embed_train(model), online.embed_train(model)
    assert ta.shape == tb.shape == (len(data.train_paths), model.dim)
    assert float((ta * tb).sum(1).min()) > 0.999
    frozen = cached.embed_eval(model, adapted=False)
    assert np.allclose(frozen, ea, atol=1e-6)  # adapters start at zero: adapted == frozen


def test_online_frozen_embeddings_through_the_onnx_runner(both, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from dva.runtime.frozen import OnnxFrozenRunner

    monkeypatch.setenv("DVA_CACHE", str(tmp_path))
    _, (_, data, model, online) = both
    ref_eval, ref_train = online.embed_eval(model, adapted=False), online.embed_train(model, adapted=False)
    fast = ImageBatches(online.dataset, online.eval_paths, online.data_cfg, online.cfg, online.info,
                        OnnxFrozenRunner(model))
    e, t = fast.embed_eval(model, adapted=False), fast.embed_train(model, adapted=False)
    assert e.shape == ref_eval.shape and float((e * ref_eval).sum(1).min()) > 0.99999
    assert float((t * ref_train).sum(1).min()) > 0.99999
    assert list(tmp_path.glob("onnx/frozen-embed-*.onnx"))  # it did run on onnxruntime
    # the adapted embedding never goes through the frozen runner
    with torch.no_grad():
        model.adapter_parameters()[1].add_(0.5)  # an "up" weight: the adapted model moves
    try:
        moved = fast.embed_eval(model)
        assert float((moved * ref_eval).sum(1).min()) < 0.99999
    finally:
        with torch.no_grad():
            model.adapter_parameters()[1].sub_(0.5)


def test_no_views_without_boxes(synthetic_root, tmp_path):
    cfg, data, _, source = _setup(synthetic_root, tmp_path, "--opa.box_source", "none", "--train.cache_flips", "false")
    assert set(source.train.tensors) == {"x"} and source.train.flips == 1
    b = next(source.epoch(0, epoch_batches(data.train_labels, 4, 2, cfg.train.seed, 0)))
    assert b.disc is None and b.bg is None
