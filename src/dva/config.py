"""Typed configuration: dataclasses, YAML files and ``--section.key value`` overrides.

A run is fully described by one :class:`DVAConfig`. YAML files hold the same nesting as the
dataclasses; unknown keys are errors (a typo must not silently fall back to a default).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

# Light modules only (names, no torch or timm): the value lists of the registries.
from dva.ica_names import ACTIVATIONS, check_target, parse_blocks
from dva.opa.names import SOURCE_NAMES
from dva.runtime import RUNTIMES


@dataclass
class BackboneConfig:
    """The frozen pre-trained encoder (docs/METHOD.md, Frozen backbone)."""

    name: str = "mobilenetv2_100"  # any timm ViT (fused attn.qkv) or CNN
    weights: str = "bundled"  # bundled | hub | none | PATH (.safetensors / .pt / .pth)
    img_size: int = 224


@dataclass
class ICAConfig:
    """In-Context Adaptation: bottlenecks beside frozen projections (docs/METHOD.md, ICA)."""

    enabled: bool = True
    rank: int = 16
    act: str = "gelu"  # gelu | relu | identity (identity can be merged for export)
    scale: float = 1.0
    learnable_scale: bool = False
    # Embedding-time multiplier on every adapter's output, on top of the trained ``scale``:
    # 0 = the frozen backbone exactly, 1 = the trained adapters (docs/METHOD.md, "Between frozen
    # and trained"). Training leaves it at 1; `--ica-scale` and `dva interpolate` set it.
    alpha: float = 1.0
    # ViT: "qk" (paper), "q", "k", "v", "qkv". CNN: "pw" (expansion 1x1), "pwl" (projection 1x1),
    # "head" (conv_head), joined by "+", e.g. "pw+pwl+head". "auto": see dva.ica_names.AUTO.
    target: str = "auto"
    # Which blocks carry adapters: "all", a Python-style slice over the backbone's blocks, e.g.
    # "-2:" (ViT: the last 2 transformer blocks; CNN: the last 2 stages), or "auto".
    blocks: str = "auto"


@dataclass
class OPAConfig:
    """Object-Perceptual Adaptation: object and background views (docs/METHOD.md, OPA)."""

    enabled: bool = True
    box_source: str = "self"  # one of dva.opa.names.SOURCE_NAMES
    boxes_file: str = ""  # CSV/JSON of path,x,y,w,h[,score]; default: RUN_DIR/boxes.json
    # Below this box score: x_disc = x and no background term. -1 = per source: 0.5 for a
    # detector ([DVF]: yolox, groundingdino) and annotations, 0.3 for owlv2 (lower scores), 0.15
    # for self-localisation and saliency, whose score measures how concentrated the map is
    # (0 = flat map) and is lower for large, loosely framed objects (cub100: median 0.34, 5th
    # percentile 0.19).
    min_score: float = -1.0
    # Detector sources (docs/METHOD.md, OPA). prompt: the classes to detect, comma-separated
    # (yolox: COCO names, e.g. "bird", "cat,dog", "car", "airplane"; groundingdino/owlv2: any
    # words); "auto" = the dataset's super-category (cub*/nabirds: bird, pets/dogs: cat,dog,
    # cars: car, aircraft: airplane; other datasets must set it).
    prompt: str = "auto"
    # yolox: the YOLOX-Nano ONNX file; "" = $DVA_YOLOX or ../shared/models/yolox_nano.onnx beside
    # the working directory or the checkout.
    detector_path: str = ""
    # groundingdino / owlv2: Hugging Face model ids (or local folders).
    groundingdino_model: str = "IDEA-Research/grounding-dino-tiny"
    owlv2_model: str = "google/owlv2-base-patch16-ensemble"
    # Self-localisation: threshold = mean + threshold * (max - mean) of the response map (0 = the
    # mean, as in SCDA; 0.4 measured tighter on drawn objects), computed at loc_scale x img_size.
    # loc_scale 2 gives a finer map of a stride-32 CNN (drawn-object IoU ~0.7 instead of ~0.6)
    # for 4x the cost of the box pass; 1 is the default for speed.
    threshold: float = 0.4
    loc_scale: float = 1.0
    # Which picture self-localisation looks at. "whole": the whole image squashed to the input size
    # (a frozen pass of its own). "view": the original training view (resize + centre crop, what
    # the x-view prefix cache holds), the box mapped back to the image and, where it touches the
    # view's edge, extended to the image's edge; with the prefix cache and loc_scale 1 the boxes
    # and the x-view prefixes then come from ONE frozen pass (docs/METHOD.md, Training).
    loc_view: str = "whole"
    expand: float = 1.1  # box enlargement before cropping (DVF)
    aspect: float = 0.75  # short/long side ratio the crop is padded to (DVF: 3:4)
    background: bool = True  # also build x_bg (object box filled with the mean colour)


@dataclass
class LossConfig:
    """Objective weights (docs/METHOD.md, DPT and Objective)."""

    proxy_scale: float = 3.0  # ProxyNCA++: both sides scaled by this after L2 normalisation
    proxy_temperature: float = 1.0  # extra softmax temperature on -d^2 (1 = DVF)
    w_disc: float = 1.0  # proxy loss on the object view
    w_bg: float = 0.25  # proxy loss on the background view
    w_con: float = 0.0  # margin contrastive term on e_x
    con_margin: float = 0.3
    beta: float = 1.0  # DPT weight
    tau: float = 3.0  # DPT temperature
    dpt_cos: float = 0.0  # weight of the extra 1 - cos(e_s, sg(e_t)) term
    w_anchor: float = 0.0  # weight of 1 - cos(e_x, sg(frozen e_x)): the embedding held near the frozen one


# The learning rate and warm-up a run gets when its config does not set them: they depend on
# what is trained (measured on the cub100 validation split: docs/METHOD.md, Training). An
# explicit train.lr / train.warmup_epochs (in the YAML file or on the command line) always wins.
TRAINABLE_DEFAULTS: dict[str, dict[str, float]] = {
    "ica": {"lr": 1e-3, "warmup_epochs": 0.0},  # ~33 k adapter weights (the demo's value)
    "none": {"lr": 1e-3, "warmup_epochs": 0.0},  # proxies only (train.lr unused)
    "head": {"lr": 1e-4, "warmup_epochs": 0.0},  # 1.6 M (1280 x 1280 projection); 1e-2 collapsed
    "full": {"lr": 1e-4, "warmup_epochs": 0.0},  # every backbone weight (2.2 M); 1e-3 collapsed
}


# The data-scaled step budget (train.steps=0): AUTO_STEPS["epochs"] passes over the training
# images, at least "min" and at most "max" steps. Chosen on validation splits (held-out training
# classes; docs/METHOD.md, Training, and `python -m benchmarks.defaults.budget`): the clamp rule that
# best reproduces the budgets chosen on cub100, cars196, aircraft47 and a pets37 split (the floor:
# the smallest set's choice). Several E fit them equally well; the tie kept the rule in force
# (validation selection and early stopping recover from a budget too long, nothing from one too short).
AUTO_STEPS: dict[str, int] = {"epochs": 6, "min": 240, "max": 2000}
# data.val_classes=auto: hold out max(min, round(fraction x classes)) of the training classes when
# there are at least "min_classes" of them (fewer: too few to both train and validate on).
AUTO_VAL_CLASSES: dict[str, float] = {"min_classes": 10, "fraction": 0.2, "min": 2}
# train.eval_every=auto: about this many periodic evaluations over the step budget (at epoch ends,
# every ceil(epochs / N) epochs). Early stopping counts evaluations, so a fixed number of them per
# run makes train.patience a share of the budget (3 of 8 ~ 3/8) on any dataset; one evaluation per
# epoch could stop a 140-image training split (4 batches per epoch) 12 steps after its last gain.
AUTO_EVALS = 8
AUTO = -1  # the int value of "auto" in the fields that accept it (data.val_classes, train.eval_every)


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping."""

    # What is trained besides the proxies: "ica" (DVA), "head" (a linear projection on frozen
    # pooled features: a baseline), "full" (every backbone weight, BatchNorm statistics frozen: a
    # baseline), "none" (proxies only).
    trainable: str = "ica"
    # The budget in optimiser steps (dva_train.budget.resolve_budget, docs/METHOD.md, Training):
    # steps > 0 is explicit; 0 = scaled with the data, AUTO_STEPS. epochs > 0 overrides both
    # (epochs x batches per epoch). max_steps > 0 caps whichever applies.
    steps: int = 0
    epochs: int = 0
    max_steps: int = 0
    # Batch composition; a split with fewer classes than classes_per_batch gets all its classes
    # per batch, and more images of each (dva_train.budget.fit_batch; the log says so).
    classes_per_batch: int = 8
    images_per_class: int = 4
    lr: float | None = None  # the trained weights; not set: TRAINABLE_DEFAULTS[trainable]
    # The adapters' rate when train.lr is not set and train.trainable is ica (a preset's choice on
    # validation); a run of another trainable keeps its own default, never this one.
    ica_lr: float | None = None
    proxy_lr: float = 1e-2
    weight_decay: float = 1e-4
    adam_eps: float = 1e-8  # DVF used 1.0 (for full fine-tuning)
    # Proxy-only warm-up (DVF used 5 epochs for full fine-tuning); not set: TRAINABLE_DEFAULTS[trainable].
    warmup_epochs: float | None = None
    proxy_init: str = "mean"  # mean (frozen class means) | randn (randn / 8, DVF)
    grad_clip: float = 10.0
    seed: int = 42
    amp: bool = False  # autocast (bfloat16 on CPU, float16 on CUDA)
    augment: str = "standard"  # standard (DVF-style) | flip | none
    cache_prefix: str = "auto"  # auto | on | off: compute the frozen layers below the first adapter once
    cache_flips: bool = True  # cached prefix: also store the mirrored view
    # Keep prefix caches on disk here and reuse them across runs with the same frozen weights,
    # images, views and boxes ("" = in memory only; the benchmark shares one folder).
    cache_dir: str = ""
    # Who runs the frozen network for the boxes and the prefix caches (dva.runtime.frozen): auto = onnx
    # (onnxruntime, exported once into $DVA_CACHE/onnx/) on the CPU when installed, else torch.
    frozen_runtime: str = "auto"
    # Epochs between periodic evaluations (validation: best.safetensors, early stopping); 0 = only
    # at the end; -1 or "auto" = about AUTO_EVALS evaluations over the budget.
    eval_every: int = AUTO
    # Early stopping: end the run after this many evaluations in a row without a better MAP@R on
    # the VALIDATION split (data.val_classes); never on the test split. 0 = off.
    patience: int = 3
    eval_frozen: bool = True  # also evaluate the frozen backbone before training (baseline row)
    num_workers: int = 0
    batch_size_eval: int = 64
    log_every: int = 10  # steps
    save_every: int = 50  # steps between resumable checkpoints (0 = end of each epoch only)
    threads: int = 0  # torch.set_num_threads; 0 = leave as is
    device: str = "auto"  # auto | cpu | cuda
    # Collapse guard (docs/METHOD.md, Training): a non-finite loss or gradient, an evaluation below
    # collapse_fraction x the frozen backbone's MAP@R or R@1 (0 = off), or a training batch whose
    # embeddings have a mean pairwise cosine above collapse_cos (1 = off). stop: end the run there
    # (`dva train` exits with 3; best.safetensors keeps the best evaluation); warn: log and go on.
    on_collapse: str = "stop"
    collapse_fraction: float = 0.5
    collapse_cos: float = 0.99

    def __post_init__(self) -> None:
        # The keys left unset (None) take their value from TRAINABLE_DEFAULTS; remembered (not a
        # field: not saved) so that a run can log where its learning rate came from.
        self.defaulted = tuple(k for k in ("lr", "warmup_epochs") if getattr(self, k) is None)
        self.apply_trainable_defaults()

    def apply_trainable_defaults(self) -> None:
        """(Re)set the keys that were not given from ``TRAINABLE_DEFAULTS[trainable]``."""
        table = dict(TRAINABLE_DEFAULTS.get(self.trainable, TRAINABLE_DEFAULTS["ica"]))
        if self.trainable == "ica" and self.ica_lr is not None:
            table["lr"] = self.ica_lr
        for k in self.defaulted:
            setattr(self, k, table[k])


@dataclass
class DataConfig:
    """Which dataset and protocol to train and evaluate on."""

    dataset: str = "cub100"
    root: str = ""
    protocol: str = "open"
    # Hold out this many of the (last) training classes for validation: periodic evaluation,
    # best.safetensors and early stopping, without touching the test classes, which are scored
    # once at the end. 0 = evaluate on the test split. -1 or "auto" = AUTO_VAL_CLASSES's rule
    # (dva_train.budget.held_out_classes): >= 10 training classes -> max(2, 20%) of them, else 0.
    val_classes: int = -1


@dataclass
class DVAConfig:
    """Everything that defines a DVA run."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    ica: ICAConfig = field(default_factory=ICAConfig)
    opa: OPAConfig = field(default_factory=OPAConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    output_dir: str = "runs/dva"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>", limits: bool = True) -> "DVAConfig":
        """A config from a nested dict (``limits=False``: see :func:`validate`)."""
        return validate(_from_dict(cls, d, source), source, limits)


# ----------------------------------------------------------------------------- validation
# Every value a user gives is checked here, once, when the config is read (load_config,
# DVAConfig.from_dict) or when code that received a hand-built config starts (build_model,
# dva_train.train.train): a typo or an impossible value fails in a second, naming the key and
# the fix, not after minutes of work. The code that uses a value does not check it again.
#
# The names a string option may take, each list from the code that implements the names (leaf
# modules that import nothing: importing this one loads neither torch nor timm). Where that code
# has no such module, the names are listed here, next to the user of the value. data.dataset is
# checked by dva.data's registry when the split is read (dva.data.registry.canonical_name): dva.data
# sits above the config (tests/test_layering.py) and its package imports its readers.
CHOICES: dict[str, tuple[str, ...]] = {
    "ica.act": ACTIVATIONS,  # dva.ica builds these (and refuses to import when they differ)
    "opa.box_source": SOURCE_NAMES,  # the box-source registry's names (dva.opa.sources.SOURCES)
    "opa.loc_view": ("whole", "view"),  # dva.opa.self_boxes
    "train.trainable": tuple(TRAINABLE_DEFAULTS),  # every mode has its defaults; dva.model.DVAModel builds them
    "train.proxy_init": ("mean", "randn"),  # dva_train.train
    "train.augment": ("standard", "flip", "none"),  # dva.transforms.train_transform
    "train.cache_prefix": ("auto", "on", "off"),  # dva_train.data.use_prefix_cache
    "train.frozen_runtime": RUNTIMES,  # dva.runtime.frozen.frozen_runner
    "train.on_collapse": ("stop", "warn"),  # dva_train.train
    "data.protocol": ("open", "closed"),  # = dva.data.protocols.PROTOCOLS (tests/test_config.py compares them)
}


class Bound(NamedTuple):
    """A number's range: above ``lo`` (or equal to it when ``lo_ok``), at most ``hi``; ``why``: the reason or fix."""

    lo: float
    lo_ok: bool = True
    hi: float | None = None
    why: str = ""


# Upper bounds catch values that cannot be meant and would otherwise fail late, as a MemoryError
# or a stalled machine (an ICA rank of 10^8 asks for tens of GB at once).
_BATCH = "the default is 8 classes x 4 images; a batch holds classes_per_batch x images_per_class images"
RANGES: dict[str, Bound] = {
    "backbone.img_size": Bound(16, True, 1024, "the input side in pixels: fine-grained retrieval runs at 224-518, "
                                               "and memory grows with its square"),
    "ica.rank": Bound(1, True, 1024, "the width of each adapter's bottleneck: 4-16 here and in the paper; "
                                     "near a layer's own width it is no bottleneck"),
    "opa.expand": Bound(0, False, None, "1.1 enlarges the box by 10%"),
    "opa.aspect": Bound(0, False, 1, "short/long side ratio, e.g. 0.75"),
    "opa.threshold": Bound(0, True, 1),
    "opa.loc_scale": Bound(0, False, 4, "the box pass runs at loc_scale x backbone.img_size: 2 already costs 4x"),
    "loss.proxy_scale": Bound(0, False),
    "loss.proxy_temperature": Bound(0, False),
    "loss.tau": Bound(0, False),
    **{f"loss.{k}": Bound(0, True, None, "a loss weight") for k in ("w_disc", "w_bg", "w_con", "beta", "dpt_cos",
                                                                        "w_anchor")},
    "train.steps": Bound(0, True, None, "0 = scaled with the data (docs/METHOD.md, Training)"),
    "train.epochs": Bound(0, True, None, "0 = the step budget (train.steps); > 0 overrides it"),
    "train.max_steps": Bound(0, True, None, "0 = no cap"),
    "train.patience": Bound(0, True, None, "evaluations without a better validation MAP@R; 0 = off"),
    "train.classes_per_batch": Bound(1, True, 1024, _BATCH),
    "train.images_per_class": Bound(1, True, 256, _BATCH),
    "train.ica_lr": Bound(0, False, None, "the adapters' rate when train.lr is not set; adapters use ~1e-3"),
    "train.lr": Bound(0, False, None, "a negative rate trains backwards; adapters use ~1e-3"),
    "train.proxy_lr": Bound(0, True),
    "train.weight_decay": Bound(0, True),
    "train.adam_eps": Bound(0, False),
    "train.warmup_epochs": Bound(0, True),
    "train.grad_clip": Bound(0, False),
    "train.eval_every": Bound(AUTO, True, None, "epochs; auto (or -1) = about 8 evaluations per run; 0 = only at the end"),
    "train.num_workers": Bound(0, True, 256, "image-decoding processes; 0 = decode in the training process"),
    "train.batch_size_eval": Bound(1, True, 4096, "images per evaluation batch"),
    "train.log_every": Bound(1, True),
    "train.save_every": Bound(0, True, None, "0 = end of each epoch only"),
    "train.threads": Bound(0, True, 1024, "0 = leave as is"),
    "train.collapse_fraction": Bound(0, True, 1, "0 = off; 0.5 = stop below half the frozen backbone's figures"),
    "train.collapse_cos": Bound(0, False, 1, "1 = off"),
    "data.val_classes": Bound(AUTO, True, None,
                              "auto (or -1) = the hold-out rule; 0 = evaluate on the test split; 1 is refused"),
}
AUTO_FIELDS = ("data.val_classes", "train.eval_every")  # int fields that also read "auto" (stored as AUTO = -1)
MAX_BATCH = 4096  # train.classes_per_batch x train.images_per_class (each image has up to 3 views)
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def validate(cfg: "DVAConfig", source: str = "<config>", limits: bool = True) -> "DVAConfig":
    """Check every value of ``cfg``; raise one ``ValueError`` naming ``source``, the key, the value and the fix.

    Choices (from the registries that implement them), ranges and upper bounds, the text forms of
    ``ica.target``, ``ica.blocks`` and ``train.device``, and the combinations no run can use.
    ``limits=False`` (a checkpoint's recorded config, read to embed with it; a model being built)
    skips the upper bounds of the ``train.*`` and ``data.*`` values and the training-only
    combinations: they guard new runs, and must not lock out a model trained before a bound existed.
    The bounds that guard the model's size (``ica.rank``, ``backbone.img_size``...) always apply.
    Returns ``cfg``.
    """
    def get(key: str) -> Any:
        section, name = key.split(".")
        return getattr(getattr(cfg, section), name)

    _check_types(cfg, source)
    for key, allowed in CHOICES.items():
        if get(key) not in allowed:
            raise ValueError(f"{source}: {key}={get(key)!r} is not one of {', '.join(allowed)}")
    for key, (lo, lo_ok, hi, why) in RANGES.items():
        v = get(key)
        if v is None:  # an optional field left unset (train.ica_lr)
            continue
        if hi is not None and not limits and key.startswith(("train.", "data.")):
            hi = None
        if not math.isfinite(v) or v < lo or (v == lo and not lo_ok) or (hi is not None and v > hi):
            want = (f">= {lo}" if lo_ok else f"> {lo}") + (f" and <= {hi}" if hi is not None else "")
            raise ValueError(f"{source}: {key}={v!r} must be {want}" + (f" ({why})" if why else ""))
    try:
        check_target(cfg.ica.target)
        if cfg.ica.blocks != "auto":
            parse_blocks(cfg.ica.blocks)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    if not _DEVICE.fullmatch(cfg.train.device):
        raise ValueError(f"{source}: train.device={cfg.train.device!r} is not auto, cpu, cuda, cuda:N or mps")
    if limits:
        _check_combinations(cfg, source)
    return cfg


def _check_types(cfg: "DVAConfig", source: str) -> None:
    """Each field holds its declared type (a config built in code may hold anything); floats are finite.

    An int is a float here; a bool is not a number (``True`` would pass as 1).
    """
    for section in dataclasses.fields(cfg):
        obj = getattr(cfg, section.name)
        if not dataclasses.is_dataclass(obj):
            continue
        hints = typing.get_type_hints(type(obj))
        # The keys a default filled in last (train.lr copies train.ica_lr): a bad value is named where it was given.
        late = getattr(obj, "defaulted", ())
        for f in sorted(dataclasses.fields(obj), key=lambda f: f.name in late):
            v, t = getattr(obj, f.name), _plain_type(hints[f.name])
            if v is None and t is not hints[f.name]:  # an optional field left unset
                continue
            ok = isinstance(v, t) or (t is float and isinstance(v, int))
            if not ok or (t in (int, float) and isinstance(v, bool)):
                raise ValueError(f"{source}: {section.name}.{f.name}={v!r} must be {t.__name__}")
            if isinstance(v, float) and not math.isfinite(v):  # e.g. ica.scale, opa.min_score: no range
                raise ValueError(f"{source}: {section.name}.{f.name}={v!r} must be a finite number")
    if not isinstance(cfg.output_dir, str):
        raise ValueError(f"{source}: output_dir={cfg.output_dir!r} must be str")


def _check_combinations(cfg: "DVAConfig", source: str) -> None:
    """Values that are fine alone but that no run can use together."""
    tc = cfg.train
    if tc.classes_per_batch * tc.images_per_class > MAX_BATCH:
        raise ValueError(f"{source}: train.classes_per_batch x train.images_per_class = {tc.classes_per_batch} x "
                         f"{tc.images_per_class} = {tc.classes_per_batch * tc.images_per_class} images per batch, "
                         f"more than {MAX_BATCH} ({_BATCH}, each with up to 3 views): lower one of them")
    if cfg.loss.w_anchor > 0 and (tc.trainable != "ica" or not cfg.ica.enabled):
        raise ValueError(f"{source}: loss.w_anchor={cfg.loss.w_anchor:g} holds the adapted embedding near the frozen "
                         f"one and needs adapters (train.trainable=ica, ica.enabled=true; here "
                         f"train.trainable={tc.trainable}, ica.enabled={str(cfg.ica.enabled).lower()}): "
                         "set loss.w_anchor 0")
    if cfg.data.val_classes == 1:
        raise ValueError(f"{source}: data.val_classes=1: a validation split of one class has nothing to tell apart "
                         "(every neighbour is of the query's class): hold out 2 or more classes, 0 (evaluate on the "
                         "test split) or auto")
    if tc.cache_prefix == "on" and tc.trainable == "full":
        raise ValueError(f"{source}: train.cache_prefix=on cannot train the full backbone (train.trainable=full: the "
                         "cached stem would stay frozen): use train.cache_prefix=off or auto")


def _from_dict(cls: type, d: dict[str, Any], source: str, prefix: str = "") -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"{source}: '{prefix or 'top level'}' must be a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {sorted(prefix + k for k in unknown)}; "
            f"valid keys under '{prefix or 'top level'}': {sorted(names)}"
        )
    kwargs = {}
    for k, v in d.items():
        t = hints[k]
        if dataclasses.is_dataclass(t):
            kwargs[k] = _from_dict(t, v or {}, source, prefix + k + ".")
        elif prefix + k in AUTO_FIELDS and isinstance(v, str) and v.strip().lower() == "auto":
            kwargs[k] = AUTO
        else:
            kwargs[k] = _coerce(v, t, f"{source}: {prefix}{k}")
    return cls(**kwargs)


def _coerce(v: Any, t: Any, where: str) -> Any:
    """``v`` (as YAML read it) as a value of the field type ``t``; ValueError naming ``where``."""
    if v is None and _plain_type(t) is not t:  # an optional field written unset (train.ica_lr: null)
        return None
    t = _plain_type(t)
    if t is bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        if isinstance(v, str) and v.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return v.lower() in ("true", "1", "yes", "on")
        raise ValueError(f"{where}: expected true/false, got {v!r}")
    if t in (int, float):
        if isinstance(v, bool):  # int(True) would be 1: a true/false where a number belongs is a mistake
            raise ValueError(f"{where}: expected {t.__name__}, got {v!r}")
        try:
            out = t(v)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
            raise ValueError(f"{where}: expected {t.__name__}, got {v!r}") from None
        if t is int and isinstance(v, float) and v != out:
            raise ValueError(f"{where}: expected an integer, got {v!r}")
        return out
    if t is str:
        if isinstance(v, bool):  # YAML 1.1 reads a bare on/off as a boolean
            return "on" if v else "off"
        return "" if v is None else str(v)
    return v


def _plain_type(t: Any) -> Any:
    """``float | None`` -> ``float``; other types as they are."""
    if isinstance(t, types.UnionType) or typing.get_origin(t) is typing.Union:
        return next(a for a in typing.get_args(t) if a is not type(None))
    return t


def _field_type(parts: list[str]) -> Any:
    """The type of the config field at ``parts`` (e.g. ``["ica", "blocks"]``), or None if there is none."""
    cls: Any = DVAConfig
    for part in parts:
        if not dataclasses.is_dataclass(cls):
            return None
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        cls = hints[part]
    return None if dataclasses.is_dataclass(cls) else _plain_type(cls)


def _override_value(parts: list[str], token: str) -> Any:
    """An override token as the config reads it: YAML for numbers and booleans, the text itself for a string.

    A string field keeps what was typed (``-2:``, ``007``, ``true``), unless the token is a quoted
    YAML string (``'-2:'``), which loses its quotes as it would in a file.
    """
    try:
        parsed = yaml.safe_load(token) if token != "" else ""
    except yaml.YAMLError:
        return token  # not YAML (e.g. "[1, 2"): the field's coercion names the key if it is no string
    if isinstance(parsed, (dict, list)) or (_field_type(parts) is str and not isinstance(parsed, str)):
        return token  # no config field is a mapping or a list
    return parsed


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DVAConfig:
    """Build a config from defaults, an optional YAML file and ``--a.b value`` overrides.

    Args:
        path: YAML file with the nesting of :class:`DVAConfig` (missing keys keep defaults).
        overrides: tokens such as ``["--train.epochs", "3", "--ica.rank=8"]``.
    """
    d: dict[str, Any] = {}
    source = "<defaults>"
    if path:
        p = resolve_config_path(path)
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{p}: not valid YAML ({exc})") from None
        source = str(p)
    for key, value in parse_overrides(overrides or []):
        node = d
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override --{key}: '{part}' is not a section")
        node[parts[-1]] = _override_value(parts, value)
    where = f"{source} + overrides" if overrides else source
    return validate(_from_dict(DVAConfig, d, where), where)


def resolve_config_path(path: str | Path) -> Path:
    """A YAML file, or the name of a packaged config (``demo``, ``cub200_vitb16``)."""
    p = Path(path)
    if p.is_file():
        return p
    packaged = Path(__file__).parent / "configs" / f"{p.stem}.yaml"
    if p.suffix in ("", ".yaml") and p.parent == Path(".") and packaged.is_file():
        return packaged
    names = sorted(q.stem for q in (Path(__file__).parent / "configs").glob("*.yaml"))
    raise FileNotFoundError(f"config file {p} not found (packaged configs: {', '.join(names)})")


PRESET_TAG = "# preset:"  # the first line of a packaged per-backbone preset: "# preset: <one-line description>"


def presets() -> dict[str, str]:
    """The packaged per-backbone presets (``dva train --preset NAME``): name -> its one-line description.

    A preset is a packaged config whose first line is ``# preset: ...`` (src/dva/configs/).
    """
    out = {}
    for p in sorted((Path(__file__).parent / "configs").glob("*.yaml")):
        first = p.read_text().split("\n", 1)[0]
        if first.startswith(PRESET_TAG):
            out[p.stem] = first[len(PRESET_TAG):].strip()
    return out


PRESET_FIGURES = Path(__file__).parent / "configs" / "preset_figures.json"


def preset_figures() -> dict[str, dict[str, list[float]]]:
    """Test R@1 of each preset's default command, frozen and trained, per dataset: preset -> dataset ->
    ``[frozen, trained]`` (percent). Written from the defaults benchmark's JSON by
    ``python -m benchmarks.defaults.docs`` (runs of the packaged preset only); empty when absent."""
    if not PRESET_FIGURES.is_file():
        return {}
    return json.loads(PRESET_FIGURES.read_text())


def parse_overrides(tokens: list[str]) -> list[tuple[str, str]]:
    """``["--a.b", "1", "--c=2"]`` -> ``[("a.b", "1"), ("c", "2")]``; dashes in keys become underscores."""
    out, i = [], 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise ValueError(f"override {tok!r}: expected --section.key value")
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise ValueError(f"override {tok}: missing value")
            value = tokens[i + 1]
            i += 2
        out.append((key.replace("-", "_"), value))
    return out


def save_config(cfg: DVAConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML (atomically)."""
    from dva.utils import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
