"""The alpha sweep of one saved model: every image decoded once, the frozen prefix run once, each alpha's rest.

Scoring a model at five alphas on ~10,000 images (validation, ID test, the OOD galleries) would,
done as five ``Embedder.embed_paths`` passes, decode every image five times and run the whole
network five times. Here:

* :class:`ImageCache` decodes each image once into the uint8 crop the eval transform makes before
  its tensor conversion (resize + centre crop), held in memory while its set is scored at every
  alpha and, with a folder, kept in a file keyed by every file's path, mtime and size and by the
  transform: later runs (processes) skip decoding;
  :func:`to_input` finishes the transform on whole batches (the same float operations, bit for bit);
* a :class:`Dial` embeds one batch at every alpha: :class:`AdapterDial` runs the frozen prefix
  (``DVAModel.prefix``, no adapter below ``model.split``) once and only the adapted suffix per alpha
  (``set_ica_scale`` + ``embed_from_prefix``); :class:`ModelsDial` holds one model per alpha (WiSE-FT
  checkpoints, or the frozen backbone) and runs each on the batch;
* :class:`PrefixCache` keeps an adapter model's frozen-prefix output of a whole set in a file keyed by
  the frozen weights' fingerprint, ``model.split`` and the set's crops: every adapter model of a
  (dataset, backbone, placement) - DVA, ICA alone, the anchored DVA, every budget and seed - has the
  same prefix, so after the first run only the suffixes are computed;
* ``runtime="onnx"`` runs every network of a dial on onnxruntime, as ``dva export`` and the training's
  frozen jobs do (:mod:`dva.runtime`): the frozen prefix (:class:`dva.runtime.frozen.OnnxFrozenRunner`),
  each alpha's adapted suffix (``export_suffix`` at that ICA scale) and each alpha's whole model
  (``export_onnx``), exported once per dial into a private folder. On the CPU each of the three runs
  several times faster there than in torch (``python -m benchmarks.frontier.runtime_speed``, side by
  side); the embeddings equal torch's to float rounding (tests/benchmarks/test_frontier.py), and the
  run records which runtime scored it.

:func:`score_sets` scores every set leave-one-out (:func:`dva.metrics.retrieval_metrics`) and
measures the saving against the per-alpha ``embed_paths`` passes on a sample.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from benchmarks import _common as C


def akey(alpha: float) -> str:
    """The JSON key of an alpha: ``0``, ``0.25``, ``1`` (``format(alpha, 'g')``)."""
    return format(float(alpha), "g")


class ImageSet(NamedTuple):
    """A retrieval set: its name (``val``, ``test`` or an OOD gallery), image paths and labels."""

    name: str
    paths: list[str]
    labels: np.ndarray


# ----------------------------------------------------------------------------- decoding
class Preprocess(NamedTuple):
    """An eval transform cut at its tensor conversion: the PIL part, and the normalisation after it."""

    pil: Callable
    mean: torch.Tensor  # (1, 3, 1, 1)
    std: torch.Tensor
    key: str  # the transform's description (part of the cache key)


def split_transform(transform: Any) -> Preprocess:
    """Cut ``transform`` (timm's eval Compose: resize, crop, to-tensor, normalise) at its to-tensor step.

    Raises:
        ValueError: a transform of another shape (the uint8 cache would not reproduce it).
    """
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    names = [type(t).__name__ for t in steps]
    if len(steps) < 2 or "ToTensor" not in names[-2] or not isinstance(steps[-1], T.Normalize):
        raise ValueError(f"the image cache needs an eval transform ending in to-tensor + normalise, got {names}")
    mean = torch.as_tensor(steps[-1].mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(steps[-1].std, dtype=torch.float32).view(1, -1, 1, 1)
    return Preprocess(T.Compose(steps[:-2]), mean, std, repr(transform))


def to_input(u8: np.ndarray, pre: Preprocess) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 crops -> the model's ``(B, 3, H, W)`` input, as the transform makes it.

    The same float32 operations as torchvision's ``to_tensor`` (``/ 255``) and ``Normalize``
    (``- mean``, ``/ std``), so the result equals the per-image transform bit for bit.
    """
    x = torch.from_numpy(np.array(u8, copy=True)).permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
    return x.sub(pre.mean).div(pre.std)


def _decode_one(path: str, pre: Preprocess) -> np.ndarray:
    from dva.data import load_rgb

    return np.asarray(pre.pil(load_rgb(path)), dtype=np.uint8)


def decode(paths: Sequence[str], pre: Preprocess, threads: int = 1) -> np.ndarray:
    """Every image of ``paths`` as its uint8 crop, ``(N, H, W, 3)``, in order (``threads`` decoders)."""
    with ThreadPoolExecutor(max(1, threads)) as pool:  # PIL's decode and resize release the GIL
        crops = list(pool.map(lambda p: _decode_one(p, pre), paths))
    return np.stack(crops) if crops else np.zeros((0, 0, 0, 3), np.uint8)


def cache_key(paths: Sequence[str], pre: Preprocess) -> str:
    """The file-cache key of a set: every file's path, mtime and size, and the transform."""
    h = hashlib.sha1(pre.key.encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return h.hexdigest()[:20]


def save_array(npy: Path, arr: np.ndarray, meta: dict[str, Any]) -> None:
    """``arr`` to ``npy`` atomically (a reader never sees half an array), then ``meta`` beside it (``.json``):
    a reader takes the array only when both are there."""
    npy.parent.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_name(f".{npy.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, npy)
    C.write_json(npy.with_suffix(".json"), meta)


class ImageCache:
    """Decoded crops of image sets: in memory until forgotten, and in ``folder`` (when given) for later processes."""

    def __init__(self, pre: Preprocess, folder: Path | None = None, threads: int = 1) -> None:
        self.pre, self.folder, self.threads = pre, Path(folder) if folder else None, threads
        self.decode_seconds = 0.0  # spent decoding in this process
        self.decoded_images = 0
        self.cached_images = 0  # read back from the file cache instead
        self.cached_decode_seconds = 0.0  # what decoding those cost when they were cached
        self._mem: dict[str, np.ndarray] = {}

    def get(self, paths: Sequence[str]) -> np.ndarray:
        """The crops of ``paths``, ``(N, H, W, 3)`` uint8: held, else read from the file cache, else decoded."""
        key = cache_key(paths, self.pre)
        if key in self._mem:
            return self._mem[key]
        npy = self.folder / f"{key}.npy" if self.folder else None
        if npy is not None and npy.is_file() and npy.with_suffix(".json").is_file():
            arr = np.load(npy, mmap_mode="r")
            meta = json.loads(npy.with_suffix(".json").read_text())
            if len(arr) == len(paths):
                self.cached_images += len(arr)
                self.cached_decode_seconds += float(meta.get("decode_seconds", 0.0))
                self._mem[key] = arr
                return arr
        t0 = time.perf_counter()
        arr = decode(paths, self.pre, self.threads)
        dt = time.perf_counter() - t0
        self.decode_seconds += dt
        self.decoded_images += len(arr)
        if npy is not None:
            save_array(npy, arr, {"images": len(arr), "decode_seconds": dt, "transform": self.pre.key})
        self._mem[key] = arr
        return arr

    def forget(self, paths: Sequence[str]) -> None:
        """Drop the crops of ``paths`` from memory (a set scored at every alpha is not needed again)."""
        self._mem.pop(cache_key(paths, self.pre), None)


# ----------------------------------------------------------------------------- dials
def resolve_runtime(runtime: str) -> str:
    """``torch`` or ``onnx`` for ``runtime`` (``auto``: onnx where onnx and onnxruntime are installed)."""
    from dva.runtime import RUNTIMES, sessions

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "auto":
        return "onnx" if sessions.onnx_available() else "torch"
    if runtime == "onnx" and not sessions.onnx_available():
        raise ValueError("runtime onnx needs the onnx and onnxruntime packages (pip install onnx onnxruntime)")
    return runtime


class OnnxGraphs:
    """A dial's ONNX graphs: each exported once into a private temporary folder (``onnx_*`` in ``parent``,
    e.g. the run folder, where a killed process's leftovers are found; else the system's) and run by
    :class:`dva.runtime.onnx_embedder.SplitSessions` with ``threads`` cores; :meth:`close` removes them."""

    def __init__(self, threads: int | None = None, parent: Path | None = None) -> None:
        self.threads = threads
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="onnx_", dir=parent))
        self.sessions: dict[str, Any] = {}
        self.export_seconds = 0.0

    def get(self, name: str, export: Callable[[Path], Any]) -> Any:
        """The sessions of graph ``name``, exported by ``export(path)`` on first use."""
        from dva.runtime.onnx_embedder import SplitSessions

        if name not in self.sessions:
            t0 = time.perf_counter()
            path = self.folder / f"{name}.onnx"
            export(path)
            self.sessions[name] = SplitSessions(path, self.threads)
            self.export_seconds += time.perf_counter() - t0
        return self.sessions[name]

    def close(self) -> None:
        for split in self.sessions.values():
            split.close()
        self.sessions.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


def _run(graph: Any, x: torch.Tensor) -> torch.Tensor:
    """An ONNX graph on a float32 batch (any strides), as a torch tensor."""
    return torch.from_numpy(graph.run(np.ascontiguousarray(x.numpy(), dtype=np.float32)))


class Dial:
    """Embeds a batch at every alpha; counts its time (``prefix_seconds``, ``suffix_seconds``).

    ``runtime``: ``torch``, ``onnx`` or ``auto`` (:func:`resolve_runtime`); ``threads``: onnxruntime's cores;
    ``tmp``: where the ONNX graphs' temporary folder goes (:class:`OnnxGraphs`).
    """

    def __init__(self, runtime: str = "torch", threads: int | None = None, tmp: Path | None = None) -> None:
        self.prefix_seconds = 0.0
        self.suffix_seconds = 0.0
        self.runtime = resolve_runtime(runtime)
        self.graphs = OnnxGraphs(threads, tmp) if self.runtime == "onnx" else None

    def close(self) -> None:
        """Remove the dial's ONNX graphs (a torch dial holds nothing)."""
        if self.graphs is not None:
            self.graphs.close()

    def embed(self, x: torch.Tensor, alphas: Sequence[float]) -> dict[float, torch.Tensor]:
        raise NotImplementedError

    def embed_crops(self, crops: np.ndarray, pre: Preprocess, alphas: Sequence[float], batch_size: int,
                    set_key: str | None = None) -> dict[float, list[torch.Tensor]]:
        """Every crop of a set at every alpha, batch by batch (each batch converted once): ``{alpha: [batches]}``.

        ``set_key``: the set's crop key (:func:`cache_key`), for a dial that keeps per-set work.
        """
        parts: dict[float, list[torch.Tensor]] = {a: [] for a in alphas}
        for s in range(0, len(crops), batch_size):
            for a, e in self.embed(to_input(crops[s:s + batch_size], pre), alphas).items():
                parts[a].append(e)
        return parts


class AdapterDial(Dial):
    """An adapter model: the frozen prefix once per batch, the adapted suffix once per alpha."""

    def __init__(self, model: Any, prefixes: PrefixCache | None = None, runtime: str = "torch",
                 threads: int | None = None, tmp: Path | None = None) -> None:
        super().__init__(runtime, threads, tmp)
        self.model = model.eval()
        self.prefixes = prefixes
        self.frozen = None
        if self.runtime == "onnx":
            from dva.runtime.frozen import OnnxFrozenRunner

            self.frozen = OnnxFrozenRunner(self.model, "cpu", threads)

    def _prefix(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model.prefix(x) if self.frozen is None else self.frozen.prefix(x)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, alphas: Sequence[float]) -> dict[float, torch.Tensor]:
        """L2-normalised embeddings of ``x`` at each alpha (``set_ica_scale``): the prefix holds no adapter."""
        t0 = time.perf_counter()
        h = self._prefix(x)
        self.prefix_seconds += time.perf_counter() - t0
        return self.embed_from_prefix(h, alphas)

    def _suffix_graph(self, alpha: float) -> Any:
        from dva.runtime.onnx_export import export_suffix
        from dva.runtime.torch_embedder import Embedder

        def export(path: Path) -> None:
            self.model.set_ica_scale(alpha)  # a constant of the exported graph
            export_suffix(Embedder(self.model), self.model.split, path)

        return self.graphs.get(f"suffix_{akey(alpha)}", export)

    @torch.no_grad()
    def embed_from_prefix(self, h: torch.Tensor, alphas: Sequence[float]) -> dict[float, torch.Tensor]:
        """L2-normalised embeddings at each alpha from the prefix output ``h``."""
        graphs = {a: self._suffix_graph(a) for a in alphas} if self.graphs is not None else {}
        t1 = time.perf_counter()
        out = {}
        for a in alphas:
            if a in graphs:
                out[a] = _run(graphs[a], h)
            else:
                self.model.set_ica_scale(a)
                out[a] = self.model.embed_from_prefix(h, normalize=True).float()
        self.suffix_seconds += time.perf_counter() - t1
        return out

    def close(self) -> None:
        super().close()
        if self.frozen is not None:
            self.frozen.close()

    @torch.no_grad()
    def embed_crops(self, crops: np.ndarray, pre: Preprocess, alphas: Sequence[float], batch_size: int,
                    set_key: str | None = None) -> dict[float, list[torch.Tensor]]:
        """With a :class:`PrefixCache` and the set's key: the set's prefix read back (or computed whole and
        stored), then the suffix per alpha batch by batch; else :meth:`Dial.embed_crops`."""
        if self.prefixes is None or set_key is None or self.model.split == 0:  # split 0: no frozen prefix
            return super().embed_crops(crops, pre, alphas, batch_size, set_key)
        key = self.prefixes.key(self.model, set_key, self.runtime)
        stored = self.prefixes.load(key, len(crops))
        if stored is None:
            t0 = time.perf_counter()
            stored = np.concatenate([_to_store(self._prefix(to_input(crops[s:s + batch_size], pre)))
                                     for s in range(0, len(crops), batch_size)])
            dt = time.perf_counter() - t0
            self.prefix_seconds += dt
            self.prefixes.save(key, stored, dt)
        parts: dict[float, list[torch.Tensor]] = {a: [] for a in alphas}
        for s in range(0, len(crops), batch_size):
            for a, e in self.embed_from_prefix(_from_store(stored[s:s + batch_size]), alphas).items():
                parts[a].append(e)
        return parts


class PrefixCache:
    """Frozen-prefix outputs of whole sets, in ``folder``, shared by every adapter model of the same prefix.

    The key is the frozen weights' fingerprint (``DVAModel.fingerprint``: every frozen tensor),
    ``model.split`` (the layers below the first adapter), the set's crop key (:func:`cache_key`:
    every file and the transform) and the runtime that computed it: nothing trainable reaches the
    prefix, so two models with the same key compute the same array. CNN maps are stored
    channels-last (N, H, W, C), the layout torch's prefix computes them in, and handed back with
    those strides: the suffix then runs the same kernels as on a fresh prefix, and the embeddings
    equal the uncached ones bit for bit.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.cached_images = 0  # read back instead of computed
        self.cached_prefix_seconds = 0.0  # what computing those cost when they were cached

    def key(self, model: Any, set_key: str, runtime: str = "torch") -> str:
        """The file key of ``model``'s prefix on the set of crop key ``set_key``, computed by ``runtime``."""
        blob = f"{model.fingerprint}\0{model.split}\0{set_key}\0float32\0{runtime}"
        return hashlib.sha1(blob.encode()).hexdigest()[:20]

    def load(self, key: str, n: int) -> np.ndarray | None:
        """The stored array of ``key`` (memory-mapped) when it holds ``n`` images, else None."""
        npy = self.folder / f"{key}.npy"
        if not (npy.is_file() and npy.with_suffix(".json").is_file()):
            return None
        arr = np.load(npy, mmap_mode="r")
        if len(arr) != n:
            return None
        self.cached_images += n
        self.cached_prefix_seconds += float(json.loads(npy.with_suffix(".json").read_text()).get("prefix_seconds", 0))
        return arr

    def save(self, key: str, arr: np.ndarray, seconds: float) -> None:
        """Store ``arr`` under ``key`` atomically (a reader never sees half an array)."""
        save_array(self.folder / f"{key}.npy", arr, {"images": len(arr), "shape": list(arr.shape[1:]),
                                                     "prefix_seconds": seconds})


def _to_store(h: torch.Tensor) -> np.ndarray:
    """A prefix batch as stored: CNN maps channels-last (N, H, W, C), token sequences as they are."""
    return (h.permute(0, 2, 3, 1) if h.dim() == 4 else h).contiguous().numpy()


def _from_store(a: np.ndarray) -> torch.Tensor:
    """A stored batch back as the prefix made it: (N, C, H, W) with channels-last strides for CNN maps."""
    t = torch.from_numpy(np.array(a, copy=True))
    return t.permute(0, 3, 1, 2) if t.dim() == 4 else t


class ModelsDial(Dial):
    """One model per alpha (WiSE-FT checkpoints, or the frozen backbone at alpha 0), each run whole."""

    def __init__(self, models: dict[float, Any], runtime: str = "torch", threads: int | None = None,
                 tmp: Path | None = None) -> None:
        super().__init__(runtime, threads, tmp)
        self.models = {float(a): m.eval() for a, m in models.items()}

    def _graph(self, alpha: float) -> Any:
        from dva.runtime.onnx_export import export_onnx
        from dva.runtime.torch_embedder import Embedder

        return self.graphs.get(f"model_{akey(alpha)}", lambda path: export_onnx(Embedder(self.models[alpha]), path))

    @torch.no_grad()
    def embed(self, x: torch.Tensor, alphas: Sequence[float]) -> dict[float, torch.Tensor]:
        """L2-normalised embeddings of ``x`` by each alpha's model."""
        graphs = {a: self._graph(float(a)) for a in alphas} if self.graphs is not None else {}
        t0 = time.perf_counter()
        out = {a: _run(graphs[a], x) if a in graphs else self.models[float(a)].embed(x).float() for a in alphas}
        self.suffix_seconds += time.perf_counter() - t0
        return out


def embed_set(dial: Dial, crops: np.ndarray, pre: Preprocess, alphas: Sequence[float],
              batch_size: int, set_key: str | None = None) -> dict[float, np.ndarray]:
    """Embeddings of every crop at every alpha (:meth:`Dial.embed_crops`), ``{alpha: (N, dim)}``."""
    parts = dial.embed_crops(crops, pre, alphas, batch_size, set_key)
    return {a: torch.cat(p).numpy() if p else np.zeros((0, 0), np.float32) for a, p in parts.items()}


# ----------------------------------------------------------------------------- scoring
@dataclass
class SweepStats:
    """What :func:`score_sets` did in this process: images embedded (x alphas) and the seconds it took."""

    images: int = 0
    image_alphas: int = 0
    embed_seconds: float = 0.0  # decoding (or reading the cache) + the network, every alpha
    metric_seconds: float = 0.0


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating, np.integer))}


def score_sets(dial: Dial, sets: list[ImageSet], alphas: Sequence[float], cache: ImageCache, batch_size: int,
               done: dict[str, dict[str, Any]] | None = None,
               save: Callable[[dict[str, dict[str, Any]]], None] | None = None,
               stats: SweepStats | None = None) -> dict[str, dict[str, Any]]:
    """Retrieval metrics of every set at every alpha: ``{akey(alpha): {set name: metrics}}``.

    Args:
        dial: embeds a batch at every alpha.
        sets: the sets, scored one after another.
        alphas: the alphas.
        cache: decoded crops.
        batch_size: images per forward pass.
        done: scores of an earlier, interrupted process: (alpha, set) pairs found there are not redone.
        save: called with the scores after every set (a killed process keeps what it finished).
        stats: counts and times of this call, added to.
    """
    from dva.metrics import retrieval_metrics

    stats = stats if stats is not None else SweepStats()
    scores: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (done or {}).items()}
    for s in sets:
        todo = [a for a in alphas if s.name not in scores.get(akey(a), {})]
        if not todo:
            continue
        t0 = time.perf_counter()
        embs = embed_set(dial, cache.get(s.paths), cache.pre, todo, batch_size, cache_key(s.paths, cache.pre))
        t1 = time.perf_counter()
        for a in todo:
            scores.setdefault(akey(a), {})[s.name] = _numbers(retrieval_metrics(embs[a], s.labels))
        cache.forget(s.paths)
        stats.images += len(s.paths)
        stats.image_alphas += len(s.paths) * len(todo)
        stats.embed_seconds += t1 - t0
        stats.metric_seconds += time.perf_counter() - t1
        if save is not None:
            save(scores)
    return scores


def naive_seconds_per_image(embedder: Any, paths: Sequence[str], batch_size: int) -> float:
    """Seconds per image of one ``Embedder.embed_paths`` pass (decode + whole network) on ``paths``."""
    t0 = time.perf_counter()
    embedder.embed_paths(list(paths), batch_size=batch_size, progress=False)
    return (time.perf_counter() - t0) / max(1, len(paths))


def _prefix_record(dial: Dial) -> dict[str, Any]:
    """The dial's runtime and export seconds; what a :class:`PrefixCache` saved (images whose prefix was
    read back, and what computing it had cost)."""
    pc = getattr(dial, "prefixes", None)
    rec = {"runtime": dial.runtime, "export_seconds": dial.graphs.export_seconds if dial.graphs else 0.0}
    return rec if pc is None else {**rec, "cached_prefix_images": pc.cached_images,
                                   "cached_prefix_seconds": pc.cached_prefix_seconds}


def sweep_record(dial: Dial, cache: ImageCache, stats: SweepStats, naive_s_per_img: float | None) -> dict[str, Any]:
    """What the sweep cost and saved against one ``embed_paths`` pass per alpha at the measured time per image.

    ``naive_seconds_estimate`` = seconds per image of ``embed_paths`` (measured on a sample) x the
    (image, alpha) pairs embedded; ``saved_seconds`` = that less ``embed_seconds`` (decoding or
    reading the crops, the prefix once and the suffix per alpha; metrics excluded from both).
    """
    naive = None if naive_s_per_img is None else naive_s_per_img * stats.image_alphas
    return {"images": stats.images, "image_alphas": stats.image_alphas, "embed_seconds": stats.embed_seconds,
            "metric_seconds": stats.metric_seconds, "decode_seconds": cache.decode_seconds,
            "decoded_images": cache.decoded_images, "cached_images": cache.cached_images,
            "cached_decode_seconds": cache.cached_decode_seconds, "prefix_seconds": dial.prefix_seconds,
            "suffix_seconds": dial.suffix_seconds, **_prefix_record(dial), "naive_seconds_per_image": naive_s_per_img,
            "naive_seconds_estimate": naive, "saved_seconds": None if naive is None else naive - stats.embed_seconds,
            "saved_fraction": None if not naive else 1.0 - stats.embed_seconds / naive}
