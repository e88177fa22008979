"""Class-balanced batches and rank slices (src/dva_train/sampler.py)."""
import numpy as np
import pytest

from dva_train.sampler import epoch_batches, rank_slice


def _labels(num_classes=6, per_class=5):
    return np.repeat(np.arange(num_classes), per_class)


def test_every_batch_is_classes_times_images():
    labels = _labels()
    batches = epoch_batches(labels, classes_per_batch=3, images_per_class=2, seed=0, epoch=0)
    assert len(batches) == len(labels) // 6 == 5
    for b in batches:
        assert b.dtype.kind == "i" and len(b) == 6 and len(set(b.tolist())) == 6  # no image twice in a batch
        classes = labels[b]
        # Contiguous groups of images_per_class images of one class, classes all different.
        assert (classes[0::2] == classes[1::2]).all() and len(set(classes[0::2].tolist())) == 3


def test_images_of_a_class_without_replacement_while_they_last():
    labels = _labels(num_classes=4, per_class=6)
    batches = epoch_batches(labels, 2, 3, seed=1, epoch=0)
    drawn = np.concatenate(batches)
    for c in range(4):
        seq = [i for i in drawn.tolist() if labels[i] == c]
        first = seq[:6]
        assert len(set(first)) == len(first), (c, seq)


def test_depends_only_on_seed_and_epoch():
    labels = _labels()
    a = epoch_batches(labels, 3, 2, seed=5, epoch=2)
    b = epoch_batches(labels, 3, 2, seed=5, epoch=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = epoch_batches(labels, 3, 2, seed=5, epoch=3)
    d = epoch_batches(labels, 3, 2, seed=6, epoch=2)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not all(np.array_equal(x, y) for x, y in zip(a, d))


def test_too_few_classes_is_an_error():
    with pytest.raises(ValueError, match="classes_per_batch=4 but only 3"):
        epoch_batches(_labels(num_classes=3), 4, 2, seed=0, epoch=0)


def test_tiny_dataset_still_gives_one_batch():
    assert len(epoch_batches(_labels(num_classes=2, per_class=1), 2, 2, seed=0, epoch=0)) == 1


def test_rank_slice_partitions_the_global_batch():
    batch = np.arange(10, 22)
    parts = [rank_slice(batch, r, 3) for r in range(3)]
    assert [p.tolist() for p in parts] == [[10, 11, 12, 13], [14, 15, 16, 17], [18, 19, 20, 21]]
    assert np.array_equal(rank_slice(batch, 0, 1), batch)
    with pytest.raises(ValueError, match="not divisible by 5"):
        rank_slice(batch, 0, 5)
