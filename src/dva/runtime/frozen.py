"""The frozen backbone's two jobs in training preparation, on the fastest runtime at hand.

Before the first training step the frozen network runs over every training image several
times: once for the self-localisation boxes (:func:`dva.opa.geometry.box_from_map`, docs/METHOD.md,
OPA) and once per cached view for the frozen-prefix cache (docs/METHOD.md, Training). Neither
job involves a trainable weight, so both can run on onnxruntime, which runs a MobileNetV2 4-7x
faster than eager torch on a CPU (benchmarks/embed_speed). :class:`FrozenRunner` gives the two
jobs one interface whichever runtime serves them:

* :meth:`FrozenRunner.prefix` — the layers below the first adapter (``DVAModel.prefix``);
* :meth:`FrozenRunner.activation_map` — the response map of the frozen network, adapters
  disabled (``DVAModel.activation_map(x, adapted=False)``);
* :meth:`FrozenRunner.prefix_and_map` — both of the first two from one pass over the same
  view (``opa.loc_view=view``: the boxes found on the training view whose prefix is cached);
* :meth:`FrozenRunner.embed` — the frozen embedding (``DVAModel.embed(x, adapted=False)``): the
  step-0 baseline evaluation and the proxy initialisation of runs trained on images.

The onnx graphs are exported once per (frozen weights, prefix end, input size) into
``$DVA_CACHE/onnx/`` (:func:`dva.runtime.cache.frozen_cache_path`) and reused by later runs. The
results equal torch's to float rounding (tests/runtime/test_frozen.py); the prefix cache stores
them as float16, far coarser than that.
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dva.model import DVAModel
from dva.runtime import RUNTIMES, sessions
from dva.runtime.cache import frozen_cache_path
from dva.runtime.onnx_embedder import SplitSessions
from dva.utils import atomic_write_bytes


class FrozenRunner:
    """Runs the frozen parts of ``model`` with torch (the reference, and any device but the CPU)."""

    runtime = "torch"

    def __init__(self, model: DVAModel, device: torch.device | str = "cpu") -> None:
        self.model, self.device = model, torch.device(device)

    def close(self) -> None:
        """Free what the runner holds (onnxruntime sessions and their threads); it stays usable."""

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """``model.prefix(x)`` on the runner's device, float32."""
        return self.model.prefix(x.to(self.device)).float()

    def activation_map(self, x: torch.Tensor) -> torch.Tensor:
        """``model.activation_map(x, adapted=False)``, ``(B, h, w)`` on the CPU."""
        return self.model.activation_map(x.to(self.device), adapted=False).cpu()

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``model.embed(x, adapted=False)``: L2-normalised, ``(B, dim)`` on the CPU."""
        return self.model.embed(x.to(self.device), adapted=False).float().cpu()

    def prefix_and_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``model.prefix_and_map(x)``: the prefix (float32, runner's device) and the map (CPU), one pass."""
        h, m = self.model.prefix_and_map(x.to(self.device))
        return h.float(), m.cpu()


class _Graph(nn.Module):
    """What is traced: one frozen job of the model (a deep copy, adapters disabled)."""

    def __init__(self, model: DVAModel, job: str) -> None:
        super().__init__()
        self.model, self.job = model, job

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.job == "prefix":
            return self.model.prefix(x).contiguous()
        if self.job == "prefix_map":
            h, m = self.model.prefix_and_map(x)
            return h.contiguous(), m
        if self.job == "embed":
            return self.model.embed(x, adapted=False)
        return self.model.activation_map(x, adapted=False)


class OnnxFrozenRunner(FrozenRunner):
    """The same two jobs, each an ONNX graph run by onnxruntime (CPU; large batches split across
    one-thread sessions, :class:`dva.runtime.onnx_embedder.SplitSessions`); made on first use."""

    runtime = "onnx"

    def __init__(self, model: DVAModel, device: torch.device | str = "cpu", threads: int | None = None,
                 fallback: bool = False) -> None:
        super().__init__(model, device)
        self.threads = int(threads or torch.get_num_threads())
        self.fallback = fallback  # a job that cannot be exported runs on torch (with a warning) instead
        self._sessions: dict[tuple[str, int], Any] = {}  # (job, size) -> SplitSessions, or None = torch

    def close(self) -> None:
        for split in self._sessions.values():
            if split is not None:
                split.close()
        self._sessions.clear()

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        return self._run("prefix", x)

    def activation_map(self, x: torch.Tensor) -> torch.Tensor:
        return self._run("map", x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._run("embed", x)

    def prefix_and_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run("prefix_map", x)

    def _run(self, job: str, x: torch.Tensor) -> Any:
        key = (job, int(x.shape[-1]))
        if key not in self._sessions:
            try:
                self._sessions[key] = SplitSessions(export_frozen(self.model, job, key[1]), self.threads)
            except Exception as exc:  # the exporter and onnxruntime raise many types
                if not self.fallback:
                    raise
                warnings.warn(f"the frozen {job} of {self.model.cfg.backbone.name} at {key[1]} px could not run "
                              f"on onnxruntime ({str(exc).splitlines()[0][:200]}); using torch "
                              "(train.frozen_runtime=torch silences this)", stacklevel=2)
                self._sessions[key] = None
        if self._sessions[key] is None:
            return getattr(super(), {"prefix": "prefix", "map": "activation_map", "embed": "embed",
                                     "prefix_map": "prefix_and_map"}[job])(x)
        a = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        if job == "prefix_map":
            h, m = self._sessions[key].run_all(a)
            return torch.from_numpy(h), torch.from_numpy(m)
        return torch.from_numpy(self._sessions[key].run(a))


def export_frozen(model: DVAModel, job: str, size: int) -> Path:
    """Export ``job`` (``prefix``, ``map``, ``prefix_map`` or ``embed``) of ``model`` at ``size`` px once."""
    path = frozen_cache_path(model, job, size)
    if path.is_file():
        return path
    graph = _Graph(copy.deepcopy(model).cpu().eval(), job).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        outs = ["y", "m"] if job == "prefix_map" else ["y"]
        torch.onnx.export(graph, (torch.zeros(2, 3, size, size),), buf, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=outs, dynamic_axes={k: {0: "b"} for k in ["x", *outs]})
    atomic_write_bytes(path, buf.getvalue())
    return path


def frozen_runner(model: DVAModel, device: torch.device | str = "cpu", runtime: str = "auto") -> FrozenRunner:
    """The runner for ``train.frozen_runtime``: ``torch``, ``onnx`` (CPU only), or ``auto`` (onnx
    on the CPU when onnx and onnxruntime are installed, else torch).

    ``runtime`` is ``train.frozen_runtime``, one of :data:`dva.runtime.RUNTIMES` (a config value is
    checked by :func:`dva.config.validate`; this guards direct calls).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    on_cpu = torch.device(device).type == "cpu"
    # Through the module attribute: one definition, and tests can stand in a missing onnxruntime.
    available = sessions.onnx_available()
    use_onnx = {"torch": False, "onnx": True, "auto": on_cpu and available}[runtime]
    if use_onnx and not (on_cpu and available):  # asked for onnx where it cannot run
        raise ValueError("train.frozen_runtime=onnx needs the CPU and the onnx and onnxruntime packages "
                         "(pip install onnx onnxruntime), or use train.frozen_runtime=torch")
    if not use_onnx:
        return FrozenRunner(model, device)
    return OnnxFrozenRunner(model, device, fallback=runtime == "auto")
