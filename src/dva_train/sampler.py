"""Class-balanced batches: ``classes_per_batch`` classes x ``images_per_class`` images.

The sequence of *global* batches of an epoch depends only on ``(seed, epoch)``, so a resumed
run and a run on any number of DDP ranks see the same batches; each rank takes a contiguous
slice of every global batch (:func:`rank_slice`).
"""
from __future__ import annotations

import numpy as np


def epoch_batches(labels: np.ndarray, classes_per_batch: int, images_per_class: int, seed: int,
                  epoch: int) -> list[np.ndarray]:
    """All global batches of one epoch (about ``len(labels) / batch_size`` of them).

    Classes are drawn without replacement within a batch; images of a class without
    replacement while they last (then with), so every image is seen about once per epoch.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, epoch])
    classes = np.unique(labels)
    if len(classes) < classes_per_batch:
        raise ValueError(f"train.classes_per_batch={classes_per_batch} but only {len(classes)} training classes")
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in classes}
    batch = classes_per_batch * images_per_class
    n_batches = max(1, len(labels) // batch)
    out = []
    for _ in range(n_batches):
        # Prefer the classes with the most unseen images left (keeps coverage even).
        left = np.array([len(pools[c]) for c in classes], dtype=float)
        p = (left + 1.0) / (left + 1.0).sum()
        chosen = rng.choice(classes, size=classes_per_batch, replace=False, p=p)
        idx = []
        for c in chosen:
            for _ in range(images_per_class):
                if not pools[c]:
                    pools[c] = list(rng.permutation(np.flatnonzero(labels == c)))
                idx.append(pools[c].pop())
        out.append(np.asarray(idx))
    return out


def rank_slice(batch: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's contiguous share of a global batch (sizes must divide evenly)."""
    if len(batch) % world:
        raise ValueError(f"global batch {len(batch)} is not divisible by {world} ranks")
    n = len(batch) // world
    return batch[rank * n:(rank + 1) * n]
