"""An embedder run by onnxruntime from a file written by :func:`dva.runtime.onnx_export.export_onnx`.

Same interface (:class:`dva.runtime.protocol.EmbedderLike`) and same fingerprint as the torch
:class:`dva.runtime.torch_embedder.Embedder` it was exported from, so indexes built with either
runtime are searchable with the other; embeddings agree to cosine >= 0.99999
(tests/runtime/test_onnx_export.py). The preprocessing is rebuilt from the file's own metadata.
Activation maps (the report's overlays) need the torch model: :meth:`OnnxEmbedder.activation_maps`
raises. Sessions come from :mod:`dva.runtime.sessions`, the one onnxruntime factory.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dva.runtime.onnx_export import FORMAT, transform_from_spec
from dva.runtime.protocol import embed_image_files, embed_pil_images
from dva.runtime.sessions import open_session, providers_for, session_options


def _require_file(path: Path) -> None:
    # Checked here as well as in open_session, to point at the command that writes such a file.
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file (write one with `dva export`)")


def _checked_metadata(session: Any, path: Path) -> dict[str, str]:
    props = dict(session.get_modelmeta().custom_metadata_map)
    if props.get("dva.format") != FORMAT:
        raise ValueError(f"{path}: not written by `dva export` (format {props.get('dva.format')!r}, want {FORMAT})")
    return props


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``dva.*`` metadata of an exported file (onnxruntime only; no onnx package needed).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an ONNX file, or not one written by ``dva export``.
    """
    p = Path(path)
    _require_file(p)
    # No graph optimisation: only the metadata is read, the session never runs.
    return _checked_metadata(open_session(p, session_options(optimize=False)), p)


class SplitSessions:
    """Runs one ONNX graph on the CPU with ``threads`` cores, splitting large batches.

    A batch of at least ``threads`` items is split into parts (at least one per thread, at most
    :attr:`CHUNK` items each) that run ``threads`` at a time, one thread each, on a one-thread
    session; a smaller batch (a single query) runs on a session with ``threads`` intra-op
    threads. One thread per part avoids synchronising the threads at every layer: on 2 busy
    cores, 64 images ran 15-20% faster and used ~15% less CPU than with 2 intra-op threads, and
    gave the same bytes. Each session is made on first use.

    Args:
        path: the ONNX file.
        threads: threads per call (default: torch's thread count).
        device: ``cpu`` or ``cuda`` (needs onnxruntime-gpu; one session, no splitting).
        spin: let idle intra-op threads spin-wait between runs. Off by default: spinning threads
            take the cores from the decode workers (``dva embed`` of 512 cub100 photos on 2 shared
            cores, one decode worker: 16% more img/s and 16% less CPU per image without it) and
            from torch afterwards.
    """

    CHUNK = 16  # images per part of a split batch (dva embed, 512 cub100 photos: 170 img/s vs 162 for halves)

    def __init__(self, path: str | Path, threads: int | None = None, device: str = "cpu",
                 spin: bool = False) -> None:
        self.path = Path(path)
        self.threads = int(threads or torch.get_num_threads())
        self.device, self.spin = str(device), spin
        self._providers = providers_for(self.device)
        self._sessions: dict[int, Any] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.first = self.session(1 if self.threads > 1 and self.device == "cpu" else self.threads)
        self.input = self.first.get_inputs()[0].name

    def session(self, threads: int) -> Any:
        """The session with ``threads`` intra-op threads (made once; concurrent runs are safe)."""
        with self._lock:
            if threads not in self._sessions:
                self._sessions[threads] = open_session(self.path, session_options(threads, spin=self.spin),
                                                       self._providers)
            return self._sessions[threads]

    def run(self, a: np.ndarray) -> np.ndarray:
        """The graph's first output for the float32 batch ``a``."""
        return self.run_all(a)[0]

    def run_all(self, a: np.ndarray) -> list[np.ndarray]:
        """Every output of the graph for the float32 batch ``a`` (each with the batch axis first)."""
        threads = self.threads if self.device == "cpu" and self.threads > 1 else 1
        if len(a) < threads or threads == 1:
            return self.session(self.threads).run(None, {self.input: a})
        one = self.session(1)
        if self._pool is None:
            with self._lock:
                self._pool = self._pool or ThreadPoolExecutor(threads, thread_name_prefix="dva-onnx")
        # Parts of at most CHUNK images, at least one per thread: a thread whose core is taken for a
        # while (by the decoding thread) holds back one small part, not half of the batch.
        parts = max(threads, -(-len(a) // self.CHUNK))
        jobs = [self._pool.submit(one.run, None, {self.input: np.ascontiguousarray(c)})
                for c in np.array_split(a, parts)]
        results = [j.result() for j in jobs]
        return [np.concatenate([r[i] for r in results]) for i in range(len(results[0]))]

    def close(self) -> None:
        """Drop the sessions and the thread pool (they are made again on the next run)."""
        with self._lock:
            self._sessions.clear()
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None


class OnnxEmbedder:
    """Embeds with onnxruntime; ``fingerprint`` is the exported torch embedder's.

    Batches run on :class:`SplitSessions` (large CPU batches split across one-thread sessions).

    Args:
        path: an ONNX file from ``dva export`` (or the ``--runtime onnx`` cache).
        threads: threads per call (default: torch's thread count, as the torch runtime uses).
        device: ``cpu`` or ``cuda`` (needs onnxruntime-gpu; one session, no splitting).
        spin: let idle intra-op threads spin-wait between runs (see :class:`SplitSessions`).
    """

    runtime = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None, device: str = "cpu",
                 spin: bool = False) -> None:
        self.path = Path(path)
        _require_file(self.path)
        self.sessions = SplitSessions(self.path, threads, device, spin)
        self.threads, self.device = self.sessions.threads, self.sessions.device
        self.session = self.sessions.first
        self.meta = _checked_metadata(self.session, self.path)
        self.fingerprint = self.meta["dva.fingerprint"]
        self.dim = int(self.meta["dva.dim"])
        self.img_size = int(self.meta["dva.img_size"])
        self.transform_params = json.loads(self.meta["dva.transform"])
        self.transform = transform_from_spec(self.transform_params)
        self.model_info = {**json.loads(self.meta.get("dva.model", "{}")), "runtime": "onnx"}
        # onnxruntime sets up its buffers on a session's first run: do it now, while loading,
        # rather than in the first batch of an embedding run (a few tenths of a second).
        self.sessions.run(np.zeros((max(1, self.sessions.threads), 3, self.img_size, self.img_size), np.float32))

    def _run(self, a: np.ndarray) -> np.ndarray:
        return self.sessions.run(a)

    def embed_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, dim)`` L2-normalised embeddings (CPU)."""
        a = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        if a.ndim != 4 or a.shape[1:] != (3, self.img_size, self.img_size):
            raise ValueError(f"expected a (B, 3, {self.img_size}, {self.img_size}) batch, got {tuple(a.shape)}")
        if a.shape[0] == 0:
            return torch.zeros((0, self.dim))
        return torch.from_numpy(self._run(a))

    def embed_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images -> ``(N, dim)`` embeddings, through the preprocessing the file records."""
        return embed_pil_images(self, images)

    def embed_paths(self, paths: Sequence[str], batch_size: int = 64, num_workers: int = 0,
                    progress: bool = True) -> np.ndarray:
        """Embed image files in order; an unreadable file raises an error naming it."""
        return embed_image_files(self, paths, batch_size, num_workers, progress)

    def activation_maps(self, x: torch.Tensor, adapted: bool = True) -> torch.Tensor:
        raise NotImplementedError(
            "activation maps need the torch model (the ONNX graph only outputs embeddings): "
            "load the embedder with runtime='torch' (`--runtime torch`) for the report's overlays"
        )
