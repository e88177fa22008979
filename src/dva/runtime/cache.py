"""Where dva keeps what it builds once and reuses: the one place that names cache paths.

Everything lives under :func:`cache_dir` (``$DVA_CACHE``, default ``~/.cache/dva``):

* converted bundled weights (:func:`dva.bundled.cached_conversion`), at the top;
* ``onnx/<fingerprint>.onnx``: embedders exported for ``--runtime onnx`` (:func:`onnx_cache_path`);
* ``onnx/frozen-<job>-<key>.onnx``: the frozen jobs of training preparation
  (:func:`frozen_cache_path`, run by :mod:`dva.runtime.frozen`);
* ``onnx/suffix-<key>.onnx``: one domain's graph from a shared frozen prefix to its embedding
  (:func:`suffix_cache_path`, run by :mod:`dva.retrieval.domains`);
* ``domains/frozen-<key>.npz``: the frozen embeddings of a domain's sampled gallery images, the
  frozen router's class prototypes (:func:`domain_sample_cache_path`, run by :mod:`dva.retrieval.domains`).

Torch is imported only inside :func:`frozen_cache_path` (its caller already holds a model), so
:mod:`dva.bundled` and the command line can import this module cheaply.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dva.model import DVAModel

# Part of every frozen graph's key: bump when what the frozen graphs compute changes, so that
# exports of an older version are made again rather than reused.
FROZEN_FORMAT = "dva-frozen/1"


def cache_dir() -> Path:
    """``$DVA_CACHE`` when set, else ``~/.cache/dva`` (read at each call: tests and runs may change it)."""
    return Path(os.environ.get("DVA_CACHE") or Path.home() / ".cache" / "dva")


def onnx_cache_path(fingerprint: str) -> Path:
    """``$DVA_CACHE/onnx/<fingerprint>.onnx``: the ``--runtime onnx`` export of one embedder."""
    return cache_dir() / "onnx" / f"{fingerprint}.onnx"


def frozen_cache_path(model: DVAModel, job: str, size: int) -> Path:
    """``$DVA_CACHE/onnx/frozen-<job>-<key>.onnx``: keyed by everything the graph computes from.

    The key holds the frozen weights' fingerprint, where the prefix ends, the job, the input
    size, the family and the torch version (the exporter's output may change with it).
    """
    import torch

    key = {"format": FROZEN_FORMAT, "fingerprint": model.fingerprint, "split": model.split, "job": job,
           "size": size, "family": model.family, "torch": torch.__version__}
    if job == "embed" and model.cfg.train.trainable == "full":
        # Disabled adapters and a bypassed head leave the graph alone, trained backbone weights do
        # not: key by their values, so that an export never stands for other weights than its own.
        h = hashlib.sha256()
        for n, p in sorted(model.encoder.named_parameters()):
            h.update(n.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        key["weights"] = h.hexdigest()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "onnx" / f"frozen-{job}-{digest}.onnx"


def suffix_cache_path(fingerprint: str, start: int, digest: str, adapted: bool = True) -> Path:
    """``$DVA_CACHE/onnx/suffix-<key>.onnx``: a domain's suffix graph (:func:`dva.runtime.onnx_export.export_suffix`).

    The key holds the embedder's fingerprint (frozen weights + adapters + input size), the stage
    the graph starts at, its config digest (:func:`dva.runtime.onnx_export.config_digest`:
    adapter settings, scales, transform, export format) and whether the adapters run, so a
    changed checkpoint or setting gets a new file and an unchanged one reuses its export.
    """
    key = {"fingerprint": fingerprint, "start": int(start), "digest": digest, "adapted": bool(adapted)}
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "onnx" / f"suffix-{h}.onnx"


def domain_sample_cache_path(key: str) -> Path:
    """``$DVA_CACHE/domains/frozen-<key>.npz``: frozen embeddings of a domain's sampled gallery images.

    ``key`` names what they depend on (the model's fingerprint, input size, transform, and each
    sampled file's path, size and modification time); it is hashed into the file name.
    """
    return cache_dir() / "domains" / f"frozen-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"
