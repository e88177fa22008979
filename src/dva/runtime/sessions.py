"""onnxruntime sessions: the one factory that every ONNX user in dva goes through.

Embedders, frozen runners and the ONNX detectors of OPA all open their graphs here, so a missing
onnxruntime, a missing file and an unreadable file read the same everywhere.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any


def onnx_available() -> bool:
    """True when onnxruntime (to run) and onnx (to export) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("onnxruntime is needed here: pip install 'onnxruntime>=1.16' "
                          "(or an extra: pip install 'dva[bundled]' / 'dva[detectors]')") from None
    return ort


def session_options(threads: int = 0, spin: bool = True, optimize: bool = True) -> Any:
    """Quiet CPU session options: ``threads`` intra-op threads (0: onnxruntime's choice).

    ``spin=False`` stops idle intra-op threads from spin-waiting between runs (they would take the
    cores from decoding workers); ``optimize=False`` skips graph optimisation (metadata reads).
    """
    ort = _ort()
    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return so


def open_session(path: str | Path, options: Any = None, providers: list[str] | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``path``.

    Raises:
        ImportError: onnxruntime is not installed.
        FileNotFoundError: no such file.
        ValueError: the file is not a readable ONNX graph.
    """
    ort = _ort()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such ONNX file")
    try:
        return ort.InferenceSession(str(p), options if options is not None else session_options(),
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ValueError(f"{p}: not a readable ONNX file ({str(exc).splitlines()[0]})") from None


@lru_cache(maxsize=4)
def shared_session(path: str, threads: int = 0) -> Any:
    """One CPU session per file and process (the OPA detectors: many calls, one graph)."""
    return open_session(path, session_options(threads))


def providers_for(device: str) -> list[str]:
    """The execution providers for ``device`` (a clear error when this onnxruntime lacks them)."""
    ort = _ort()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(f"--runtime onnx on device {device!r}: this onnxruntime has no CUDA provider "
                     "(install onnxruntime-gpu, or use --runtime torch)")
