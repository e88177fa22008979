"""What the training loop reads: the split (:class:`TrainData`) and, per step, a :class:`Batch`.

Two :class:`BatchSource` implementations give the loop the same thing, so it never asks which
one it has (docs/METHOD.md, Training):

* :class:`PrefixBatches` — the frozen layers below the first adapter were run once per view
  (:mod:`dva_train.prefix_cache`); a batch is cached activations, optionally mirrored;
* :class:`ImageBatches` — images decoded and augmented online (``train.cache_prefix=off``).

Both also embed the evaluation images and, for the proxy initialisation, the training images.
One image's path: ``TrainData.train_paths`` -> :class:`~dva_train.views.ViewDataset` (its OPA
views) -> a prefix cache or a DataLoader -> :class:`Batch` -> ``DVAObjective``.
"""
from __future__ import annotations

import contextlib
import hashlib
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from dva.config import AUTO, DVAConfig
from dva.ica import ica_disabled
from dva.model import DVAModel
from dva.opa.geometry import Boxes
from dva.runtime.frozen import FrozenRunner
from dva.transforms import eval_transform, train_transform, view_transform
from dva_train.budget import BatchShape, fit_batch, validation_classes
from dva_train.distributed import DistInfo, gather_rows
from dva_train.prefix_cache import PrefixCache, build_prefix_cache, cache_keys
from dva_train.sampler import rank_slice
from dva_train.views import ViewDataset, ViewSample, mean_colour


@dataclass
class TrainData:
    """What training and evaluation read: paths, contiguous labels, annotated boxes."""

    train_paths: list[str]
    train_labels: np.ndarray
    eval_paths: list[str]
    eval_labels: np.ndarray
    annotated: dict[str, tuple]
    num_classes: int
    eval_name: str  # "test" or "val"
    notes: list[str] = field(default_factory=list)  # what the run log should say about the split
    val_note: str = ""  # data.val_classes=auto: what the hold-out rule decided, and why
    val_classes: int = 0  # training classes held out for validation (eval_name "val")
    # Whether evaluations during training choose best.safetensors: on a validation split, or on the
    # test split when data.val_classes=0 was asked for. Not with data.val_classes=auto on a split too
    # small to hold classes out: no default run selects on the test split.
    select: bool = True
    # The batch composition fitted to the split (dva_train.budget.fit_batch): the loop reads it,
    # not train.classes_per_batch / images_per_class.
    batch: BatchShape = BatchShape(8, 4)
    # With a validation hold-out (eval_name "val"): the test split, scored once at the end for the
    # model validation chose; empty otherwise (the evaluation split IS the test split).
    test_paths: list[str] = field(default_factory=list)
    test_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def prepare_data(cfg: DVAConfig, world: int = 1) -> TrainData:
    """Read the dataset split; carve a validation split out of the training classes (data.val_classes).

    The held-out classes are the last training classes that have at least two images (a class of
    one image cannot be queried); ``auto`` holds none out when too few such classes exist. The split
    is checked against the batch settings at once (:func:`check_split`), before any box or cache
    work; the batch composition is fitted to it and to the ``world`` processes that share each
    batch (:func:`dva_train.budget.fit_batch`).
    """
    from dva.data import load_split

    split = load_split(cfg.data.dataset, cfg.data.root, cfg.data.protocol)
    train, evals, name = split.train, split.test, "test"
    classes = sorted({r.label for r in train})
    held, val_note = validation_classes(cfg.data.val_classes, Counter(r.label for r in train))
    n_val = len(held)
    tests: list = []
    if held:
        val = set(held)  # training classes only: never the test ones
        tests = evals
        evals = [r for r in train if r.label in val]
        train = [r for r in train if r.label not in val]
        classes = [c for c in classes if c not in val]
        name = "val"
    shape, batch_note = fit_batch(cfg.train, list(Counter(r.label for r in train).values()), world)
    notes = check_split(cfg, train, evals, name, n_val, shape.images)
    if tests:
        from dva.data.protocols import check_retrievable

        check_retrievable(tests, "test split")
    remap = {c: i for i, c in enumerate(classes)}
    return TrainData(
        train_paths=[r.path for r in train],
        train_labels=np.array([remap[r.label] for r in train]),
        eval_paths=[r.path for r in evals],
        eval_labels=np.array([r.label for r in evals]),
        annotated={r.path: r.box for r in train if r.box is not None},
        num_classes=len(classes),
        eval_name=name,
        notes=notes + ([batch_note] if batch_note else []),
        val_note=val_note,
        val_classes=n_val,
        select=bool(n_val) or cfg.data.val_classes != AUTO,
        batch=shape,
        test_paths=[r.path for r in tests],
        test_labels=np.array([r.label for r in tests], dtype=np.int64),
    )


def check_split(cfg: DVAConfig, train: Sequence, evals: Sequence, eval_name: str, n_val: int = 0,
                images_per_class: int | None = None) -> list[str]:
    """Refuse a split the batches cannot be drawn from (ValueError naming value, count and fix).

    Fewer classes than ``train.classes_per_batch`` is no error: the batch is fitted to the split
    (:func:`dva_train.budget.fit_batch`). Returns notes for the log: classes smaller than the
    batch's images per class (``images_per_class``, the fitted value; default
    ``train.images_per_class``), whose images the sampler repeats within a batch
    (:func:`dva_train.sampler.epoch_batches` refills a class's pool when it runs out).
    """
    from dva.data.protocols import check_retrievable

    tc, counts = cfg.train, Counter(r.label for r in train)
    held = f" (data.val_classes holds {n_val} more out for validation: --data.val_classes 0 keeps them)" \
        if n_val else ""
    if len(counts) < 2:
        raise ValueError(f"the training split has {len(counts)} class{'es' if not counts else ''}{held}: a proxy loss needs at least 2 classes "
                         "(give the dataset more class folders)")
    if max(counts.values()) < 2:
        raise ValueError(f"training split: every class holds a single image ({len(counts)} classes), so a batch "
                         "has no two images of a class: give classes at least 2 images each")
    check_retrievable(evals, f"{'validation' if eval_name == 'val' else 'test'} split")
    per = tc.images_per_class if images_per_class is None else images_per_class
    small = sorted(c for c, n in counts.items() if n < per)
    if not small:
        return []
    what = f"train.images_per_class={per}" if per == tc.images_per_class else f"the batch draws {per} images per class"
    note = (f"{what} but {len(small)} of {len(counts)} training classes have "
            f"fewer images (smallest: {min(counts.values())}): their batches repeat images "
            "(the sampler draws a class's images again once they run out)")
    return [note]


def use_prefix_cache(cfg: DVAConfig, model: DVAModel) -> bool:
    """``auto``: cache when there is a frozen prefix worth caching (adapters not in stage 0).

    ``on`` with ``train.trainable=full`` (nothing frozen to cache) is refused by the config
    (:func:`dva.config.validate`).
    """
    mode = cfg.train.cache_prefix
    if mode == "auto":
        return model.split > 0
    return mode == "on"


def opa_views(cfg: DVAConfig) -> bool:
    """Whether training uses the object/background views at all."""
    return cfg.opa.enabled and cfg.opa.box_source != "none"


class Batch(NamedTuple):
    """This rank's share of one global batch, on the device.

    ``x``/``disc``/``bg`` are images ``(B, 3, H, W)`` or, from a prefix cache, activations of the
    frozen prefix; ``disc``/``bg`` may be None (no OPA views).
    """

    x: torch.Tensor
    disc: torch.Tensor | None
    bg: torch.Tensor | None
    keep: torch.Tensor  # float (B,): 1 = confident object box (background term on)
    labels: torch.Tensor  # long (B,)


class BatchSource(ABC):
    """Training batches and embeddings, whatever the training input is."""

    #: ``Batch`` views are frozen-prefix activations (``DVAObjective(..., from_prefix=True)``).
    from_prefix: bool

    def __init__(self, cfg: DVAConfig, info: DistInfo) -> None:
        self.cfg, self.info = cfg, info

    @abstractmethod
    def epoch(self, epoch: int, batches: list[np.ndarray], start: int = 0) -> Iterator[Batch]:
        """This rank's batches ``start, start + 1, ...`` of the epoch's global ``batches``.

        Lazy: a batch is made when it is asked for (``next``), not before.
        """

    @abstractmethod
    def embed_eval(self, model: DVAModel, adapted: bool = True) -> np.ndarray | None:
        """L2-normalised embeddings of the evaluation images, gathered on rank 0 (None elsewhere)."""

    @abstractmethod
    def embed_train(self, model: DVAModel, adapted: bool = True) -> torch.Tensor:
        """L2-normalised embeddings of every training image (original view), on every rank.

        ``adapted=False``: the frozen backbone's (the proxy initialisation, where the model still
        is the frozen backbone: zero ``up``, identity head, untouched weights).
        """

    @abstractmethod
    def embed_batch(self, model: DVAModel, batch: Batch) -> torch.Tensor:
        """Raw embeddings ``(B, dim)`` of a batch's original view, without gradients (the collapse guard)."""


def _adapters(model: DVAModel, adapted: bool) -> contextlib.AbstractContextManager:
    return ica_disabled(model.encoder) if not adapted else contextlib.nullcontext()


class PrefixBatches(BatchSource):
    """Batches from the frozen-prefix caches of the training and evaluation images."""

    from_prefix = True

    def __init__(self, train: PrefixCache, evals: PrefixCache, cfg: DVAConfig, info: DistInfo) -> None:
        super().__init__(cfg, info)
        self.train, self.evals = train, evals

    def epoch(self, epoch: int, batches: list[np.ndarray], start: int = 0) -> Iterator[Batch]:
        return (self._batch(epoch, bi, batches[bi]) for bi in range(start, len(batches)))

    def _batch(self, epoch: int, bi: int, batch: np.ndarray) -> Batch:
        r, w = self.info.rank, self.info.world
        # Mirrors drawn for the global batch, then sliced: any world size sees the same data.
        flips = np.random.default_rng([self.cfg.train.seed, epoch, bi]).integers(0, self.train.flips, len(batch))
        b = self.train.batch(rank_slice(batch, r, w), rank_slice(flips, r, w), self.info.device)
        return Batch(b["x"], b.get("disc"), b.get("bg"), b["keep"], b["labels"])

    @torch.no_grad()
    def embed_eval(self, model: DVAModel, adapted: bool = True) -> np.ndarray | None:
        model.eval()
        n, bs = len(self.evals), self.cfg.train.batch_size_eval
        idx = np.arange(self.info.rank, n, self.info.world)  # disjoint strided shards: no duplicates
        rows: list[torch.Tensor] = []
        with _adapters(model, adapted):
            for s in range(0, len(idx), bs):
                h = self.evals.tensors["x"][torch.as_tensor(idx[s:s + bs]), 0].to(self.info.device).float()
                rows.append(model.embed_from_prefix(h, normalize=True, adapted=adapted).float().cpu())
        emb = torch.cat(rows).numpy() if rows else np.zeros((0, model.dim), np.float32)
        return gather_rows(self.info, idx, emb, n)

    @torch.no_grad()
    def embed_train(self, model: DVAModel, adapted: bool = True) -> torch.Tensor:
        x, dev = self.train.tensors["x"], self.info.device
        with _adapters(model, adapted):
            return torch.cat([model.embed_from_prefix(x[s:s + 256, 0].to(dev).float(), True, adapted)
                              for s in range(0, len(x), 256)])

    @torch.no_grad()
    def embed_batch(self, model: DVAModel, batch: Batch) -> torch.Tensor:
        return model.embed_from_prefix(batch.x.float())


class ImageBatches(BatchSource):
    """Batches of decoded images, augmented online by ``dataset``'s transforms."""

    from_prefix = False

    def __init__(self, dataset: ViewDataset, eval_paths: list[str], data_cfg: dict, cfg: DVAConfig,
                 info: DistInfo, runner: FrozenRunner | None = None) -> None:
        super().__init__(cfg, info)
        self.dataset, self.eval_paths, self.data_cfg = dataset, eval_paths, data_cfg
        self.runner = runner  # frozen embeddings (adapted=False) through it: onnxruntime when available

    def epoch(self, epoch: int, batches: list[np.ndarray], start: int = 0) -> Iterator[Batch]:
        local = [rank_slice(b, self.info.rank, self.info.world).tolist() for b in batches[start:]]
        # Built now, not at the first batch: a DataLoader iterator draws its base seed from the
        # global torch RNG, and that draw belongs here in the sequence of random numbers.
        loader = iter(DataLoader(self.dataset, batch_sampler=local, num_workers=self.cfg.train.num_workers))
        return map(self._to_device, loader)

    def _to_device(self, s: ViewSample) -> Batch:
        dev = self.info.device
        return Batch(s.x.to(dev), s.disc.to(dev), s.bg.to(dev), s.keep.to(dev).float(), s.label.to(dev))

    def embed_eval(self, model: DVAModel, adapted: bool = True) -> np.ndarray | None:
        return self._embed(model, self.eval_paths, self.info, adapted)

    def embed_train(self, model: DVAModel, adapted: bool = True) -> torch.Tensor:
        # Every rank embeds every image (a world of one), in the evaluation pipeline.
        return torch.as_tensor(self._embed(model, self.dataset.paths, DistInfo(device=self.info.device), adapted))

    @torch.no_grad()
    def embed_batch(self, model: DVAModel, batch: Batch) -> torch.Tensor:
        return model(batch.x)

    def _embed(self, model: DVAModel, paths: list[str], info: DistInfo, adapted: bool = True) -> np.ndarray | None:
        return embed_paths(model, paths, self.cfg, self.data_cfg, info, adapted, self.runner)


@torch.no_grad()
def embed_paths(model: DVAModel, paths: list[str], cfg: DVAConfig, data_cfg: dict, info: DistInfo,
                adapted: bool = True, runner: FrozenRunner | None = None) -> np.ndarray | None:
    """L2-normalised embeddings of ``paths`` in the evaluation pipeline, gathered on rank 0 (None elsewhere).

    ``runner``: computes the frozen embeddings (``adapted=False``), e.g. through onnxruntime.
    """
    from dva.runtime.protocol import _Paths

    model.eval()
    idx = np.arange(info.rank, len(paths), info.world)  # disjoint strided shards: no duplicates
    tf = eval_transform(cfg.backbone.img_size, data_cfg)
    ds = Subset(_Paths(paths, tf), idx.tolist())
    rows: list[torch.Tensor] = []
    loader = DataLoader(ds, batch_size=cfg.train.batch_size_eval, num_workers=cfg.train.num_workers)
    # Not a bare loop: tqdm.auto's constructor already calls iter(loader) once, and each
    # DataLoader iterator draws a seed from the torch RNG; online augmentation follows that
    # sequence, so the extra draw is part of the run's results.
    frozen = runner.embed if runner is not None and not adapted else None
    with _adapters(model, adapted):
        for x in tqdm(loader, desc="eval", disable=True):
            rows.append(frozen(x) if frozen else model.embed(x.to(info.device), adapted=adapted).float().cpu())
    emb = torch.cat(rows).numpy() if rows else np.zeros((0, model.dim), np.float32)
    return gather_rows(info, idx, emb, len(paths))


def build_batches(cfg: DVAConfig, model: DVAModel, data: TrainData, boxes: Boxes, info: DistInfo,
                  progress: bool = True, runner: FrozenRunner | None = None,
                  x_prefix: torch.Tensor | None = None) -> BatchSource:
    """The batch source of this run: prefix caches (built or loaded) or online images.

    ``runner`` runs the frozen prefix (:func:`dva.runtime.frozen.frozen_runner`; default: torch).
    ``x_prefix``: the training images' x-view prefixes ``(N, ...)``, float16, already computed by
    the self-localisation pass (``opa.loc_view=view``); only the other views then run.
    """
    fill = mean_colour(data.train_paths)
    size, dcfg = cfg.backbone.img_size, model.data_cfg
    if not use_prefix_cache(cfg, model):
        aug = cfg.train.augment
        ds = ViewDataset(data.train_paths, data.train_labels.tolist(), boxes, cfg.opa, fill,
                         train_transform(size, dcfg, aug), train_transform(size, dcfg, "flip" if aug != "none" else "none"))
        return ImageBatches(ds, data.eval_paths, dcfg, cfg, info, runner)
    x_tf, v_tf = eval_transform(size, dcfg), view_transform(size, dcfg)
    names = ("x", "disc", "bg") if opa_views(cfg) else ("x",)
    flips = 2 if cfg.train.cache_flips else 1
    ds = ViewDataset(data.train_paths, data.train_labels.tolist(), boxes, cfg.opa, fill, x_tf, v_tf, flips)
    eds = ViewDataset(data.eval_paths, data.eval_labels.tolist(), {}, cfg.opa, fill, x_tf, v_tf, 1)
    o = cfg.opa
    extra = {"boxes": sorted((p, boxes.get(p)) for p in data.train_paths), "fill": fill,
             "opa": [o.box_source, o.expand, o.aspect, o.min_score, o.background]}
    runner = runner or FrozenRunner(model, info.device)
    given = {"x": x_prefix[:, None]} if x_prefix is not None and flips == 1 else {}
    train = _cached(model, runner, ds, names, flips, extra, cfg, info, "train", progress, given)
    evals = _cached(model, runner, eds, ("x",), 1, {}, cfg, info, data.eval_name, progress)
    return PrefixBatches(train, evals, cfg, info)


def _cached(model: DVAModel, runner: FrozenRunner, ds: ViewDataset, names: tuple[str, ...], flips: int, extra: dict, cfg: DVAConfig,
            info: DistInfo, what: str, progress: bool, given: dict[str, torch.Tensor] | None = None) -> PrefixCache:
    """Load the prefix cache from ``train.cache_dir`` when present, else build (and store) it.

    ``given``: views whose prefixes are already computed (they are not run again).
    """
    labels = {"labels": hashlib.sha256(np.asarray(ds.labels).tobytes()).hexdigest()}
    keys = cache_keys(model, names, ds.paths, flips, extra, labels)
    folder = cfg.train.cache_dir
    if folder:
        hit = PrefixCache.load(folder, keys)
        if hit is not None:
            return hit
    cache = build_prefix_cache(runner, ds, names, cfg.train.batch_size_eval, info.device, cfg.train.num_workers,
                               f"cache {what}", progress, given)
    if folder and info.main:
        cache.save(folder, keys)
    return cache
