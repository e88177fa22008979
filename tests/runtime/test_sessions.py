"""dva.runtime.sessions (the one onnxruntime factory) and dva.utils.file_sha256 (the one file hash)."""
from __future__ import annotations

import hashlib
import os
import sys

import numpy as np
import pytest

from dva.runtime import sessions
from dva.utils import file_sha256

ort = pytest.importorskip("onnxruntime")


def _identity_onnx(path) -> None:
    """A one-node ONNX graph ``y = x`` (float, any length)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_a_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(FileNotFoundError, match=r"nowhere[/\\]model\.onnx: no such ONNX file"):
        sessions.open_session(missing)


def test_a_file_that_is_not_onnx_is_named(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not an onnx graph" * 10)
    with pytest.raises(ValueError, match=r"junk\.onnx: not a readable ONNX file"):
        sessions.open_session(junk)
    with pytest.raises(ValueError, match=r"junk\.onnx"):
        sessions.shared_session(str(junk))


def test_a_graph_opens_runs_and_is_shared(tmp_path):
    path = tmp_path / "id.onnx"
    _identity_onnx(path)
    s = sessions.open_session(path, sessions.session_options(threads=1, spin=False))
    a = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(s.run(None, {"x": a})[0], a)
    assert s.get_providers() == ["CPUExecutionProvider"]
    # one session per file and thread count, reused by every caller
    assert sessions.shared_session(str(path)) is sessions.shared_session(str(path))
    assert sessions.shared_session(str(path), 1) is not sessions.shared_session(str(path))


def test_session_options():
    so = sessions.session_options(threads=3, spin=False, optimize=False)
    assert (so.intra_op_num_threads, so.inter_op_num_threads) == (3, 1)
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    default = sessions.session_options()
    assert default.intra_op_num_threads == 0 and default.log_severity_level == 3  # onnxruntime's choice, quiet
    assert default.graph_optimization_level != ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def test_providers_for_cuda_on_a_cpu_only_onnxruntime(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert sessions.providers_for("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match=r"device 'cuda'.*no CUDA provider.*onnxruntime-gpu.*--runtime torch"):
        sessions.providers_for("cuda")
    with pytest.raises(ValueError, match="no CUDA provider"):
        sessions.providers_for("cuda:1")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert sessions.providers_for("cuda:0") == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_without_onnxruntime_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'onnxruntime>=1\.16'"):
        sessions.open_session(tmp_path / "any.onnx")
    with pytest.raises(ImportError, match="onnxruntime is needed"):
        sessions.providers_for("cpu")


def test_onnx_available_needs_both_packages(monkeypatch):
    import importlib.util

    assert sessions.onnx_available() == (importlib.util.find_spec("onnx") is not None)
    real = importlib.util.find_spec
    for missing in ("onnx", "onnxruntime"):  # either one absent is enough
        monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a, gone=missing: None if m == gone else real(m, *a))
        assert sessions.onnx_available() is False, missing


def test_file_sha256_equals_hashlib_and_follows_changes(tmp_path):
    p = tmp_path / "weights.bin"
    data = os.urandom(3 * (1 << 20) + 17)  # not a whole number of the 4 MiB read chunks
    p.write_bytes(data)
    assert file_sha256(p) == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(p)) == file_sha256(p)  # str or Path, one answer
    p.write_bytes(data + b"x")  # another size
    assert file_sha256(p) == hashlib.sha256(data + b"x").hexdigest()
    # the same size, other bytes: recomputed because the modification time moved
    st = p.stat()
    p.write_bytes(data + b"y")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert file_sha256(p) == hashlib.sha256(data + b"y").hexdigest()
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "missing.bin")
