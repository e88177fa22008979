"""The frontier benchmark (``python -m benchmarks.frontier.run``): plan, alpha sweep, choice, resume, rendering.

No real data: a generated dataset and a seeded random MobileNetV2-0.5 at 64 px for the sweep
(prefix reuse = ``embed_paths``, alpha 0 = frozen, WiSE-FT ends), a fake worker for the runner
(resume, rescoring, reuse), hand-made points for the Pareto / interpolation / equal-time helpers.
The one real end-to-end profile (subprocess workers, training) is marked slow.
"""
from __future__ import annotations

import json
import math
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import perturb_trainable, seeded_mnv2_weights

from benchmarks import _common as C
from benchmarks._rows import frozen_model
from benchmarks.datasets import ood as O
from benchmarks.datasets import plan as P
from benchmarks.datasets import run as D
from benchmarks.frontier import analysis as A
from benchmarks.frontier import plan as F
from benchmarks.frontier import render as R
from benchmarks.frontier import run as FR
from benchmarks.frontier import sweep as S
from benchmarks.frontier import worker as W


def _value(tokens: list[str], key: str) -> str | None:
    vals = [tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == key]
    return vals[-1] if vals else None


def _select_json(path: Path, dataset: str = "cub100", backbone: str = "mobilenetv2", complete: bool = True) -> Path:
    """A select result as the datasets harness writes it (the fields the frontier reads)."""
    path.write_text(json.dumps({
        "settings": {"dataset": dataset, "backbone": backbone, "profile": "select"}, "complete": complete,
        "chosen_tokens": {"adapters": ["--ica.rank", "8", "--ica.target", "pw+pwl", "--ica.blocks", "'-2:'",
                                       "--train.lr", "3e-3"],
                          "trained": ["--train.steps", "368"], "opa": ["--loss.beta", "2"]}}))
    return path


# ----------------------------------------------------------------------------- plan
def test_plan_expands_methods_and_budgets_from_the_select_json(tmp_path):
    t = P.TABLE
    chosen = F.load_chosen(t, "cub100", "mobilenetv2", _select_json(tmp_path / "sel.json"))
    base = F.common(t, "cub100", "mobilenetv2", "ROOT", tmp_path, 2)
    methods = list(F.FRONTIER.methods.values())
    sweep = F.sweep_runs(t, "cub100", "mobilenetv2", base, chosen, methods, [60, 184])
    assert [(m.name, b) for m, b, _ in sweep] == [("dva", 60), ("ica", 60), ("full", 60), ("dva_anchor", 60),
                                                  ("dva", 184), ("ica", 184), ("full", 184), ("dva_anchor", 184)]
    for m, b, spec in sweep:
        ov = spec.overrides
        assert spec.kind == "train" and spec.seed == 0 and spec.tag.startswith(f"{m.name}_b{b}_s0_")
        assert _value(ov, "--train.steps") == str(b)  # the sweep's budget, not the select JSON's 368
        assert _value(ov, "--data.val_classes") == "10" == str(t.datasets["cub100"].val_classes)
        assert _value(ov, "--train.eval_frozen") == "false" and _value(ov, "--train.patience") == "0"
        assert (_value(ov, "--ica.rank") == "8") == (m.name != "full")  # the chosen adapter tokens
        assert (_value(ov, "--train.lr") == "3e-3") == (m.name != "full")
    by = {(m.name, b): s.overrides for m, b, s in sweep}
    assert _value(by["dva", 60], "--loss.beta") == "2" and _value(by["dva", 60], "--opa.box_source") == "self"
    assert _value(by["ica", 60], "--opa.enabled") == "false" and "--loss.beta" not in by["ica", 60]
    assert _value(by["full", 60], "--train.trainable") == "full" and _value(by["full", 60], "--train.lr") == "1e-4"
    assert len({s.tag for *_, s in sweep}) == 8
    # The anchored DVA: the DVA row's tokens, then its extra weight (which wins); the plain row has none.
    assert by["dva_anchor", 60][:len(by["dva", 60])] == by["dva", 60]
    assert by["dva_anchor", 60][len(by["dva", 60]):] == ["--loss.w_anchor", "1"]
    assert "--loss.w_anchor" not in by["dva", 60]
    fz = F.frozen_run(t, "cub100", "mobilenetv2", base)
    assert fz.kind == "frozen" and _value(fz.overrides, "--data.val_classes") == "10"
    seeds = F.seed_runs(t, "cub100", "mobilenetv2", base, chosen, F.FRONTIER.methods["dva"], 184, 3)
    assert [s.seed for s in seeds] == [1, 2] and all(_value(s.overrides, "--train.steps") == "184" for s in seeds)
    assert seeds[0].tag.startswith("dva_b184_s1_") and seeds[0].tag not in {s.tag for *_, s in sweep}


def test_plan_refuses_without_a_finished_select_json(tmp_path):
    t, cmd = P.TABLE, "python -m benchmarks.datasets.run --dataset cars196 --backbone lite2 --profile select"
    with pytest.raises(FileNotFoundError, match=cmd.replace(".", r"\.")):
        F.load_chosen(t, "cars196", "lite2", tmp_path / "none.json")
    sel = _select_json(tmp_path / "sel.json", "cars196", "lite2", complete=False)
    with pytest.raises(ValueError, match="did not finish.*" + cmd.replace(".", r"\.")):
        F.load_chosen(t, "cars196", "lite2", sel)
    with pytest.raises(ValueError, match="pass --select"):  # another pair's choice
        F.load_chosen(t, "cub100", "lite2", _select_json(tmp_path / "other.json", "cars196", "lite2"))
    first = F.load_chosen(t, "cars196", "lite2", tmp_path / "none.json", unselected=True)
    assert first["adapters"] == t.stages[0].of("lite2")["r4_3st"] + t.stages[1].of("lite2")["lr1e-3"]


def test_cli_refuses_without_select_and_labels_unselected(tmp_path, capsys, monkeypatch):
    (tmp_path / "cub" / "images.txt").parent.mkdir()
    (tmp_path / "cub" / "images.txt").write_text("")
    monkeypatch.setattr(O, "galleries", lambda *a, **k: ([], ["cars196", "aircraft47", "pets37"]))
    args = ["--dataset", "cub100", "--root", str(tmp_path / "cub"), "--select", str(tmp_path / "none.json"),
            "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "f.json")]
    assert FR.main(args) == 2
    err = capsys.readouterr().err
    assert "--backbone mobilenetv2 --profile select" in err and "--unselected" in err
    assert not (tmp_path / "f.json").exists() and not (tmp_path / "w").exists()
    assert FR.main(args + ["--plan", "--unselected", "--budgets", "60", "--methods", "dva,full"]) == 0
    out = capsys.readouterr().out
    assert "UNSELECTED" in out and "dva 60 steps" in out and "full 60 steps" in out and "ica 60 steps" not in out
    assert FR.main(args + ["--methods", "nope"]) == 2 and "unknown method(s) ['nope']" in capsys.readouterr().err


def test_frontier_yaml_is_checked(tmp_path):
    text = F.FRONTIER_FILE.read_text()
    (tmp_path / "a.yaml").write_text(text.replace('dial: "wise_ft"', 'dial: "merge"'))
    with pytest.raises(ValueError, match="dial 'merge'"):
        F.load_frontier(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text(text.replace('row: "ica"', 'row: "frozen"'))
    with pytest.raises(ValueError, match="no main row"):
        F.load_frontier(tmp_path / "b.yaml")
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        F.check_alphas([0.5, 1.5], "--alphas")
    assert F.check_alphas([1, 0, 0.5, 0.5], "x") == [0.0, 0.5, 1.0] and F.check_budgets([184, 60], "x") == [60, 184]
    fr = F.FRONTIER
    assert fr.budgets == [60, 184, 552] and fr.alphas == [0.0, 0.25, 0.5, 0.75, 1.0] and fr.seeds == 3
    assert {m: v.dial for m, v in fr.methods.items()} == {"dva": "ica_scale", "ica": "ica_scale", "full": "wise_ft",
                                                         "dva_anchor": "ica_scale"}
    assert fr.methods["dva_anchor"].extra == ("--loss.w_anchor", "1") and fr.methods["dva"].extra == ()
    (tmp_path / "d.yaml").write_text(text.replace('runtime: "auto"', 'runtime: "tensorrt"'))
    with pytest.raises(ValueError, match="runtime must be auto, torch or onnx, got 'tensorrt'"):
        F.load_frontier(tmp_path / "d.yaml")
    assert fr.runtime == "auto" and fr.prefix_cache and fr.image_cache
    (tmp_path / "c.yaml").write_text(text.replace('dial: "wise_ft"}', 'dial: "wise_ft", extras: []}'))
    with pytest.raises(ValueError, match=r"methods.full: unknown key\(s\) \['extras'\]"):
        F.load_frontier(tmp_path / "c.yaml")


# ----------------------------------------------------------------------------- the sweep (tiny real models)
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return seeded_mnv2_weights(tmp_path_factory.mktemp("w") / "mnv2_050.safetensors")


def _cfg(weights: Path, trainable: str, blocks: str = "-2:"):
    from dva import DVAConfig

    cfg = DVAConfig()
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.img_size = "mobilenetv2_050", str(weights), 64
    cfg.train.trainable = trainable
    cfg.ica.rank, cfg.ica.target, cfg.ica.blocks = 4, "pw+pwl", blocks
    return cfg


def _images(root: Path, n: int = 12) -> tuple[list[str], np.ndarray]:
    from dva.data import load_split

    split = load_split("synthetic", str(root), "open")
    recs = sorted(split.train + split.test, key=lambda r: r.path)[:n]
    return [r.path for r in recs], np.array([r.label for r in recs])


def _trained(weights: Path, trainable: str, path: Path, blocks: str = "-2:"):
    """A "trained" checkpoint (every trainable tensor moved off its start) and its model."""
    from dva import build_model
    from dva.checkpoint import save_checkpoint

    model = perturb_trainable(build_model(_cfg(weights, trainable, blocks), 4), seed=3, scale=0.05).eval()
    save_checkpoint(path, model, {"step": 5})
    return model


def _sweep_embed(dial: S.Dial, paths: list[str], transform, alphas, tmp: Path | None = None):
    pre = S.split_transform(transform)
    return S.embed_set(dial, S.ImageCache(pre, tmp).get(paths), pre, alphas, batch_size=8)


def test_cached_crops_reproduce_the_eval_transform_bit_for_bit(synthetic_root, tmp_path, weights):
    import shutil

    from dva import build_model
    from dva.data import load_rgb
    from dva.runtime.torch_embedder import Embedder

    emb = Embedder(build_model(_cfg(weights, "ica"), 0))
    paths = [shutil.copy(p, tmp_path / f"{i}{Path(p).suffix}") for i, p in enumerate(_images(synthetic_root, 6)[0])]
    pre = S.split_transform(emb.transform)
    cache = S.ImageCache(pre, tmp_path / "c")
    x = S.to_input(cache.get(paths), pre)
    assert torch.equal(x, torch.stack([emb.transform(load_rgb(p)) for p in paths]))
    assert cache.decoded_images == 6 and cache.cached_images == 0
    again = S.ImageCache(pre, tmp_path / "c")  # another process: read from the file, not decoded
    assert np.array_equal(again.get(paths), cache.get(paths)) and again.decoded_images == 0 == again.decode_seconds
    assert again.cached_images == 6 and again.cached_decode_seconds == pytest.approx(cache.decode_seconds)
    os.utime(paths[0], ns=(1, 1))  # a changed file (mtime): another key, decoded again
    third = S.ImageCache(pre, tmp_path / "c")
    third.get(paths)
    assert third.decoded_images == 6 and len(list((tmp_path / "c").glob("*.npy"))) == 2


@pytest.mark.parametrize("blocks", ["-2:", "all"])
def test_prefix_reuse_equals_embed_paths_and_alpha0_is_frozen(synthetic_root, tmp_path, weights, blocks):
    """Adapters in the last stages (a frozen prefix to reuse) and in every stage (an empty prefix)."""
    from dva import build_model
    from dva.checkpoint import load_checkpoint
    from dva.metrics import retrieval_metrics
    from dva.runtime.torch_embedder import Embedder

    _trained(weights, "ica", tmp_path / "ica.safetensors", blocks)
    model = load_checkpoint(tmp_path / "ica.safetensors")[0]
    assert (model.split > 0) == (blocks != "all")
    paths, labels = _images(synthetic_root)
    dial = S.AdapterDial(model)
    got = _sweep_embed(dial, paths, Embedder(model).transform, [0.0, 0.5, 1.0])
    assert dial.prefix_seconds > 0 and dial.suffix_seconds > 0
    for a in (0.5, 1.0):
        ref = Embedder(load_checkpoint(tmp_path / "ica.safetensors", ica_scale=a)[0]).embed_paths(paths, 8, progress=False)
        np.testing.assert_allclose(got[a], ref, rtol=0, atol=1e-5)
    assert not np.allclose(got[0.5], got[1.0], atol=1e-3)  # alpha moves the embedding
    # alpha 0 = the frozen run's embeddings (the frozen backbone, no adapters), bit for bit
    frozen = frozen_model(_cfg(weights, "ica", blocks))
    fz = _sweep_embed(S.ModelsDial({0.0: frozen}), paths, Embedder(frozen).transform, [0.0])[0.0]
    assert np.array_equal(got[0.0], fz)
    assert retrieval_metrics(got[0.0], labels) == retrieval_metrics(fz, labels)
    ref0 = Embedder(build_model(_cfg(weights, "ica", blocks), 0)).embed_paths(paths, 8, progress=False)  # zero adapters
    np.testing.assert_allclose(fz, ref0, rtol=0, atol=1e-5)


def test_prefix_cache_is_shared_by_models_of_one_prefix_and_changes_nothing(synthetic_root, tmp_path, weights):
    """DVA, ICA alone and the anchored DVA of one placement share the frozen prefix: the second model
    reads it back, and every embedding equals the uncached sweep's bit for bit."""
    from dva import build_model
    from dva.checkpoint import load_checkpoint, save_checkpoint
    from dva.runtime.torch_embedder import Embedder

    paths, _ = _images(synthetic_root)
    models = {}
    for name, seed, blocks in (("a", 3, "-2:"), ("b", 4, "-2:"), ("c", 3, "-3:")):
        built = perturb_trainable(build_model(_cfg(weights, "ica", blocks), 4), seed=seed, scale=0.05).eval()
        save_checkpoint(tmp_path / f"{name}.safetensors", built, {"step": 5})
        models[name] = load_checkpoint(tmp_path / f"{name}.safetensors")[0]
    pre = S.split_transform(Embedder(models["a"]).transform)
    crops = S.ImageCache(pre).get(paths)
    key = S.cache_key(paths, pre)
    alphas = [0.0, 0.5, 1.0]
    cache = S.PrefixCache(tmp_path / "prefix")
    first = S.AdapterDial(models["a"], cache)
    got = S.embed_set(first, crops, pre, alphas, 5, key)  # 12 images in batches of 5: a short last batch
    ref = S.embed_set(S.AdapterDial(models["a"]), crops, pre, alphas, 5)
    assert all(np.array_equal(got[a], ref[a]) for a in alphas)
    assert first.prefix_seconds > 0 and cache.cached_images == 0 and len(list(cache.folder.glob("*.npy"))) == 1
    # Another model of the same frozen weights and split: its prefix is read back, not computed.
    again = S.PrefixCache(tmp_path / "prefix")  # another process
    second = S.AdapterDial(models["b"], again)
    got_b = S.embed_set(second, crops, pre, alphas, 5, key)
    ref_b = S.embed_set(S.AdapterDial(models["b"]), crops, pre, alphas, 5)
    assert all(np.array_equal(got_b[a], ref_b[a]) for a in alphas)
    assert second.prefix_seconds == 0 and again.cached_images == 12
    assert again.cached_prefix_seconds == pytest.approx(first.prefix_seconds)
    assert not np.allclose(got_b[1.0], got[1.0], atol=1e-3)  # other adapters, other embeddings
    # Another split (adapters from an earlier stage): another prefix, computed and stored beside the first.
    assert models["c"].split != models["a"].split
    third = S.AdapterDial(models["c"], again)
    got_c = S.embed_set(third, crops, pre, alphas, 5, key)
    ref_c = S.embed_set(S.AdapterDial(models["c"]), crops, pre, alphas, 5)
    assert all(np.array_equal(got_c[a], ref_c[a]) for a in alphas)
    assert third.prefix_seconds > 0 and len(list(cache.folder.glob("*.npy"))) == 2
    # Without the set's key (or without a cache) nothing is read or stored.
    S.embed_set(S.AdapterDial(models["b"], again), crops, pre, alphas, 5)
    assert again.cached_images == 12
    rec = S.sweep_record(second, S.ImageCache(pre), S.SweepStats(), None)
    assert rec["cached_prefix_images"] == 12 and "cached_prefix_images" not in S.sweep_record(
        S.ModelsDial({}), S.ImageCache(pre), S.SweepStats(), None)


def test_onnx_runtime_scores_like_torch(synthetic_root, tmp_path, weights):
    """The onnxruntime dials (frozen prefix, each alpha's suffix, each WiSE-FT model exported) give
    torch's embeddings to float rounding and the same retrieval metrics; their graphs are removed on close."""
    pytest.importorskip("onnxruntime")
    from dva.checkpoint import load_checkpoint
    from dva.metrics import retrieval_metrics
    from dva.runtime.torch_embedder import Embedder

    paths, labels = _images(synthetic_root)
    _trained(weights, "ica", tmp_path / "ica.safetensors")
    model = load_checkpoint(tmp_path / "ica.safetensors")[0]
    pre = S.split_transform(Embedder(model).transform)
    crops, key = S.ImageCache(pre).get(paths), S.cache_key(paths, pre)
    alphas = [0.0, 0.5, 1.0]
    ref = S.embed_set(S.AdapterDial(model), crops, pre, alphas, 5)
    cache = S.PrefixCache(tmp_path / "prefix")
    for prefixes in (None, cache, cache):  # no cache, a cache filled, the same cache read back
        dial = S.AdapterDial(model, prefixes, "onnx", 2)
        got = S.embed_set(dial, crops, pre, alphas, 5, key)
        folder = dial.graphs.folder
        assert sorted(p.name for p in folder.iterdir()) == ["suffix_0.5.onnx", "suffix_0.onnx", "suffix_1.onnx"]
        dial.close()
        assert not folder.exists() and dial.runtime == "onnx"
        for a in alphas:
            np.testing.assert_allclose(got[a], ref[a], rtol=0, atol=1e-5)
            assert retrieval_metrics(got[a], labels) == pytest.approx(retrieval_metrics(ref[a], labels), abs=1e-9)
    assert cache.cached_images == 12 and len(list(cache.folder.glob("*.npy"))) == 1
    # torch's prefix is another file: the two runtimes agree only to float rounding
    S.embed_set(S.AdapterDial(model, cache), crops, pre, alphas, 5, key)
    assert len(list(cache.folder.glob("*.npy"))) == 2
    # WiSE-FT: each alpha's whole model exported
    _trained(weights, "full", tmp_path / "full.safetensors")
    tdial, _ = W._dial("train", "wise_ft", _cfg(weights, "full"), str(tmp_path / "full.safetensors"), alphas, tmp_path)
    run = tmp_path / "run"  # the graphs go into the run folder, where a killed process's are found again
    odial, _ = W._dial("train", "wise_ft", _cfg(weights, "full"), str(tmp_path / "full.safetensors"), alphas, tmp_path,
                       runtime="onnx", threads=2, graphs=run)
    want, got = S.embed_set(tdial, crops, pre, alphas, 5), S.embed_set(odial, crops, pre, alphas, 5)
    rec = S.sweep_record(odial, S.ImageCache(pre), S.SweepStats(), None)
    assert odial.graphs.folder.parent == run and odial.graphs.folder.name.startswith("onnx_")
    (run / "wise_killed").mkdir()  # what a killed worker leaves: its next process clears it
    assert W.clear_stale(run) == sorted(["wise_killed", odial.graphs.folder.name]) and not any(run.iterdir())
    odial.close()
    assert rec["runtime"] == "onnx" and rec["export_seconds"] > 0
    assert S.sweep_record(tdial, S.ImageCache(pre), S.SweepStats(), None)["runtime"] == "torch"
    for a in alphas:
        np.testing.assert_allclose(got[a], want[a], rtol=0, atol=1e-5)
    assert not np.allclose(got[0.0], got[1.0], atol=1e-3)
    with pytest.raises(ValueError, match="runtime must be one of"):
        S.resolve_runtime("tensorrt")


def test_wise_ft_ends_are_the_frozen_and_the_trained_model(synthetic_root, tmp_path, weights):
    from dva.checkpoint import load_checkpoint
    from dva.metrics import retrieval_metrics
    from dva.runtime.torch_embedder import Embedder

    _trained(weights, "full", tmp_path / "full.safetensors")
    paths, labels = _images(synthetic_root)
    dial, timed = W._dial("train", "wise_ft", _cfg(weights, "full"), str(tmp_path / "full.safetensors"),
                          [0.0, 0.5, 1.0], tmp_path)
    tr = Embedder(timed).transform
    got = _sweep_embed(dial, paths, tr, [0.0, 0.5, 1.0])
    trained = Embedder(load_checkpoint(tmp_path / "full.safetensors")[0]).embed_paths(paths, 8, progress=False)
    np.testing.assert_allclose(got[1.0], trained, rtol=0, atol=1e-5)
    assert retrieval_metrics(got[1.0], labels) == pytest.approx(retrieval_metrics(trained, labels), abs=1e-9)
    frozen = frozen_model(_cfg(weights, "full"))
    fz = _sweep_embed(S.ModelsDial({0.0: frozen}), paths, tr, [0.0])[0.0]
    np.testing.assert_allclose(got[0.0], fz, rtol=0, atol=1e-6)
    assert retrieval_metrics(got[0.0], labels) == retrieval_metrics(fz, labels)
    assert not np.allclose(got[0.5], got[1.0], atol=1e-3) and not np.allclose(got[0.0], got[1.0], atol=1e-3)


class _CountingDial(S.Dial):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, tuple]] = []

    def embed(self, x, alphas):
        self.calls.append((len(x), tuple(alphas)))
        return {a: torch.nn.functional.normalize(x.flatten(1)[:, :8] + a, dim=-1) for a in alphas}


def test_score_sets_resumes_and_decodes_each_image_once(synthetic_root, tmp_path, weights):
    from dva import build_model
    from dva.runtime.torch_embedder import Embedder

    paths, labels = _images(synthetic_root, 24)  # 3 classes of 8
    pre = S.split_transform(Embedder(build_model(_cfg(weights, "ica"), 0)).transform)
    sets = [S.ImageSet("val", paths[0::2], labels[0::2]), S.ImageSet("test", paths[1::2], labels[1::2])]
    cache, dial, saved = S.ImageCache(pre), _CountingDial(), []
    stats = S.SweepStats()
    scores = S.score_sets(dial, sets, [0.5, 1.0], cache, 4, save=lambda sc: saved.append(json.dumps(sc)),
                          stats=stats)
    assert set(scores) == {"0.5", "1"} and set(scores["1"]) == {"val", "test"}
    assert cache.decoded_images == 24 and stats.image_alphas == 48 and len(saved) == 2
    assert all(alphas == (0.5, 1.0) for _, alphas in dial.calls)  # every alpha from one converted batch
    # A process killed after the first set: only the second is scored again, for the missing alpha too.
    done = json.loads(saved[0])
    dial2, cache2 = _CountingDial(), S.ImageCache(pre)
    again = S.score_sets(dial2, sets, [0.5, 1.0, 0.75], cache2, 4, done)
    assert again["1"] == scores["1"] and cache2.decoded_images == 24
    assert [c[1] for c in dial2.calls] == [(0.75,)] * 3 + [(0.5, 1.0, 0.75)] * 3  # val: 0.75 only; test: all
    rec = S.sweep_record(dial, cache, stats, 0.5)
    assert rec["naive_seconds_estimate"] == pytest.approx(24.0) and rec["images"] == 24


# ----------------------------------------------------------------------------- analysis (hand-made points)
def test_pareto_interpolation_and_comparison_values():
    assert A.pareto([(1, 5), (2, 4), (2, 3), (3, 1), (1.5, 4.5), (0.5, 4), (3, 1)]) == \
        [(1, 5), (1.5, 4.5), (2, 4), (3, 1)]
    f = [(70.0, 60.0), (75.0, 58.0), (80.0, 55.0)]
    assert A.interp(f, 72.5) == pytest.approx(59.0) and A.interp(f, 80.0) == 55.0
    assert A.interp(f, 69.9) is None and A.interp(f, 80.1) is None and A.interp([(5.0, 1.0)], 5.0) == 1.0
    g = [(70.0, 60.0), (78.0, 54.0), (85.0, 50.0)]
    c = A.compare(f, g, skip=(70.0, 60.0))
    assert (c["lo"], c["hi"]) == (70.0, 80.0)
    assert [lv["id_r1"] for lv in c["levels"]] == [75.0, 78.0, 80.0]  # the shared frozen level left out
    assert [lv["diff"] for lv in c["levels"]] == pytest.approx([58 - 56.25, 56.2 - 54, 55 - (54 - 8 / 7)])
    assert c["min_diff"] == pytest.approx(1.75) and c["at_or_above"]
    # the integral mean: trapezoids 70-75-78-80 over 10 points of ID
    assert c["mean_diff"] == pytest.approx((1.75 / 2 * 5 + (1.75 + 2.2) / 2 * 3 + (2.2 + 1 + 8 / 7) / 2 * 2) / 10)
    assert A.compare(f, [(81.0, 50.0), (90.0, 40.0)]) is None  # no common range
    below = A.compare(g, f, skip=(70.0, 60.0))
    assert below["min_diff"] == pytest.approx(-2.2) and below["at_or_above"] is False


def _pt(method, budget, alpha, val_map, val_r1, id_r1=50.0, mean_ood=40.0, minutes=1.0, frozen=False):
    return {"method": method, "budget": budget, "alpha": alpha, "frozen": frozen, "seed": 0, "folder": "f",
            "val_r1": val_r1, "val_map": val_map, "id_r1": id_r1, "id_map": 10.0, "ood": {"pets37": mean_ood},
            "mean_ood": mean_ood, "train_minutes": minutes, "images": 100}


def test_recommended_point_uses_validation_only_with_its_tie_rules():
    pts = [_pt("frozen", 0, 0.0, 20.0, 50.0, frozen=True, minutes=0.0),
           _pt("dva", 60, 0.5, 30.0, 60.0), _pt("dva", 60, 1.0, 31.0, 59.0),
           _pt("dva", 184, 0.5, 31.0, 61.0), _pt("dva", 184, 1.0, 31.0, 61.0),  # tie with 184/0.5: the smaller alpha
           _pt("full", 60, 1.0, 10.0, 40.0), _pt("full", 184, 1.0, 12.0, 40.0)]
    r = A.recommend(pts, "dva", [60, 184], [0.0, 0.5, 1.0])
    assert (r["budget"], r["alpha"], r["frozen"]) == (184, 0.5, False)  # MAP@R tie -> R@1 61 > 59 -> alpha 0.5
    pts[2]["val_r1"] = pts[3]["val_r1"] = pts[4]["val_r1"] = 59.0  # 60/1, 184/0.5, 184/1 tie on both: the smaller budget
    r = A.recommend(pts, "dva", [60, 184], [0.0, 0.5, 1.0])
    assert (r["budget"], r["alpha"], r["val_map"], r["val_r1"]) == (60, 1.0, 31.0, 59.0)
    rf = A.recommend(pts, "full", [60, 184], [0.0, 0.5, 1.0])  # the frozen backbone beats it on validation
    assert (rf["budget"], rf["alpha"], rf["frozen"]) == (60, 0.0, True)
    assert A.recommend(pts, "ica", [60], [0.0, 1.0]) is None
    # The test split and the OOD galleries never reach the choice: corrupt them all, same choice.
    rng = np.random.default_rng(0)
    bad = [{**p, "id_r1": float(rng.uniform(0, 100)), "id_map": float(rng.uniform(0, 100)),
            "mean_ood": float(rng.uniform(0, 100)), "ood": {"pets37": float(rng.uniform(0, 100))}} for p in pts]
    for m in ("dva", "full"):
        assert A.recommend(bad, m, [60, 184], [0.0, 0.5, 1.0]) == A.recommend(pts, m, [60, 184], [0.0, 0.5, 1.0])


def test_equal_time_interpolates_between_budgets():
    pts = [_pt("dva", 60, 1.0, 0, 0, id_r1=80.0, minutes=2.0), _pt("dva", 184, 1.0, 0, 0, id_r1=82.0, minutes=6.0),
           _pt("dva", 184, 0.5, 0, 0, id_r1=99.0, minutes=6.0),  # not alpha 1: not on the time curve
           _pt("full", 60, 1.0, 0, 0, id_r1=81.0, minutes=4.0), _pt("full", 184, 1.0, 0, 0, id_r1=85.0, minutes=16.0)]
    assert A.time_curve(pts, "dva") == [(2.0, 80.0), (6.0, 82.0)]
    e = A.equal_time(pts, ["dva", "full"], [5.0, 15.0, 1.0])
    assert e[0]["id_r1"] == {"dva": pytest.approx(81.5), "full": pytest.approx(81.0 + 4 * 1 / 12)}
    assert e[0]["ahead"] == "dva"
    assert e[1]["id_r1"]["dva"] is None and e[1]["id_r1"]["full"] == pytest.approx(81 + 4 * 11 / 12)
    assert e[1]["ahead"] is None and e[2]["ahead"] is None  # one method measured / none
    assert A.minutes_of({"train_seconds": 90.0, "prep_seconds": 30.0}, "train_and_prep_seconds") == 2.0


def test_a_lead_within_the_seeds_spread_is_no_lead():
    pts = [_pt("dva", 60, 1.0, 0, 0, id_r1=80.0, minutes=5.0), _pt("full", 60, 1.0, 0, 0, id_r1=81.0, minutes=5.0)]
    assert A.equal_time(pts, ["dva", "full"], [5.0])[0]["ahead"] == "full"  # no noise given: the larger leads
    e = A.equal_time(pts, ["dva", "full"], [5.0], noise=1.2)[0]
    assert e["ahead"] is None and e["within_noise"] and not e["tie"]
    e = A.equal_time(pts, ["dva", "full"], [5.0], noise=0.9)[0]
    assert e["ahead"] == "full" and not e["within_noise"]
    # The spread: the largest std of test ID R@1 over a recommended point's seeds (one seed: none).
    rec = {"dva": {"stats": {"seeds": [0, 1, 2], "id_r1": [80.0, 0.4]}},
           "full": {"stats": {"seeds": [0, 1, 2], "id_r1": [81.0, 1.3]}},
           "ica": {"stats": {"seeds": [0], "id_r1": [79.0, 0.0]}}, "frozen": {"stats": None}}
    assert A.seed_noise(rec) == {"std": 1.3, "method": "full", "seeds": 3}
    assert A.seed_noise({"ica": rec["ica"]}) is None and A.seed_noise({}) is None


def test_time_curves_start_at_the_frozen_backbone_and_compare_at_the_common_horizon():
    pts = [_pt("frozen", 0, 0.0, 0, 0, id_r1=70.0, minutes=0.0, frozen=True),
           _pt("dva", 60, 1.0, 0, 0, id_r1=80.0, minutes=2.0), _pt("full", 60, 1.0, 0, 0, id_r1=74.0, minutes=1.0),
           _pt("full", 184, 1.0, 0, 0, id_r1=90.0, minutes=None)]  # no recorded minutes: off the curve
    assert A.time_curve(pts, "dva") == [(0.0, 70.0), (2.0, 80.0)]  # every model starts as the frozen one
    assert A.time_curve(pts, "full") == [(0.0, 70.0), (1.0, 74.0)] and A.time_curve(pts, "ica") == []
    assert A.common_horizon(pts, ["dva", "full", "ica"]) == 1.0
    e = A.equal_time(pts, ["dva", "full"], [0.5, 5.0])  # 1.0 is not below 0.5: no horizon entry
    assert [x["minutes"] for x in e] == [0.5, 5.0] and e[0]["id_r1"] == pytest.approx({"dva": 72.5, "full": 72.0})
    assert e[0]["ahead"] == "dva" and e[1]["ahead"] is None
    e = A.equal_time(pts, ["dva", "full"], [5.0])
    assert e[0]["horizon"] and e[0]["minutes"] == 1.0 and e[0]["id_r1"] == pytest.approx({"dva": 75.0, "full": 74.0})
    pts[2]["id_r1"] = 75.04  # equal to the tenth shown: a tie, nobody ahead
    e = A.equal_time(pts, ["dva", "full"], [5.0])
    assert e[0]["tie"] and e[0]["ahead"] is None
    pts[2]["id_r1"] = 75.06  # 75.1 against 75.0 as printed: ahead, though the gap is 0.06
    e = A.equal_time(pts, ["dva", "full"], [5.0])
    assert not e[0]["tie"] and e[0]["ahead"] == "full"
    assert A.minutes_of({"kind": "train"}) is None and A.minutes_of({"kind": "frozen"}) == 0.0
    assert A.minutes_of({"kind": "train", "train_seconds": 0.0}) == 0.0


def test_the_least_step_clock_takes_each_method_s_least_seconds_per_step():
    """A run that filled the shared cache or ran beside another job (DVA's 4 s/step) does not move its
    method's clock: minutes = steps x the least seconds per step over the method's runs; the spread of
    same-settings runs is kept to be said."""
    runs = [{"method": "dva", "kind": "train", "steps": 100, "train_seconds": 50.0, "seed": 0, "budget": 100},
            {"method": "dva", "kind": "train", "steps": 300, "train_seconds": 1200.0, "seed": 0, "budget": 300},
            {"method": "dva", "kind": "train", "steps": 300, "train_seconds": 180.0, "seed": 1, "budget": 300},
            {"method": "dva", "kind": "train", "steps": 300, "train_seconds": 900.0, "seed": 2, "budget": 300,
             "training_reused": True},  # re-scored: it carries its training's seconds
            {"method": "dva", "kind": "train", "train_seconds": 1.0, "seed": 3, "budget": 300},  # no steps: out
            {"method": "full", "kind": "train", "steps": 100, "train_seconds": 200.0, "seed": 0, "budget": 100},
            {"method": "frozen", "kind": "frozen", "steps": 0, "train_seconds": 0.0, "seed": 0, "budget": 0}]
    per = A.step_seconds(runs)
    assert per == {"dva": {"min": 0.5, "median": 1.8, "max": 4.0, "runs": 4},
                   "full": {"min": 2.0, "median": 2.0, "max": 2.0, "runs": 1}}
    assert A.minutes_of(runs[1], "least_step_seconds", per) == pytest.approx(300 * 0.5 / 60)
    assert A.minutes_of(runs[1]) == pytest.approx(20.0)  # its own clock: 20 min
    assert A.minutes_of(runs[-1], "least_step_seconds", per) == 0.0
    assert A.minutes_of({"method": "ica", "kind": "train", "steps": 5}, "least_step_seconds", per) is None
    assert A.spread(runs) == {"ratio": pytest.approx(1200 / 180), "method": "dva", "steps": 300, "runs": 3}
    assert A.spread(runs[:2]) is None  # no two runs of the same settings
    for r in runs:
        r["scores"] = {A.akey(1.0): {"test": {"recall@1": 0.5}}}
    pts = A.points(None, runs, [1.0], [], "least_step_seconds", per)
    assert [round(p["train_minutes"], 2) for p in pts] == [0.83, 2.5, 3.33]  # seed 0: dva 100, 300; full 100
    res = {"settings": {"clock": "least_step_seconds", "methods": {}}, "step_seconds": per,
           "step_spread": A.spread(runs)}
    assert R.clock_note(res) == ("seconds per step, least: DVA 0.50 (median 1.80, most 4.00, 4 runs), full "
                                 "fine-tune (WiSE-FT) 2.00 (median 2.00, most 2.00, 1 run); runs of the same settings "
                                 "took up to 6.7x as long as each other (DVA, 300 steps, 3 runs)")
    res["settings"]["clock"] = "train_seconds"
    assert R.clock_note(res).startswith("wall time on a shared machine: each run's load average is in the JSON; runs")


def test_comparison_says_whether_the_frozen_point_was_left_out_and_skips_non_finite():
    assert A.pareto([(1.0, math.nan), (math.nan, 2.0), (2.0, 1.0), (None, 3.0)]) == [(2.0, 1.0)]
    a, b = [(79.0, 56.0), (82.0, 55.0)], [(79.0, 56.0), (83.0, 54.0)]
    assert A.compare(a, b, skip=(79.0, 56.0))["skipped"] is True
    beaten = [(80.0, 57.0), (82.0, 56.0)]  # a trained point above frozen in both: frozen is off this frontier
    c = A.compare(beaten, b, skip=(79.0, 56.0))
    assert c["skipped"] is False and [lv["id_r1"] for lv in c["levels"]] == [80.0, 82.0]
    only_frozen = A.compare([(79.0, 56.0)], b, skip=(79.0, 56.0))
    assert only_frozen["min_diff"] is None and only_frozen["levels"] == []


def test_words_mark_unfinished_verdicts_and_name_why_nothing_was_compared(tmp_path, fake):
    res = _profile(tmp_path)
    assert res["complete"]
    assert "provisional" not in R.render_section([res])
    open_ = {**res, "complete": False}
    text = R.render_section([open_])
    line = next(ln for ln in text.splitlines() if ln.startswith("- Frontier"))
    # Every (method, budget, alpha) measured: the frontier verdicts are final even while seeds are missing.
    assert R.swept(open_) and "(of 1 result(s) with every budget and alpha measured)" in text
    assert "(of 1 result(s) with that point's seeds in). Not complete: cub100 x mobilenetv2." in text
    assert "level: yes. Target" in line
    assert R.status_tag(open_) == " (every budget and alpha measured; the recommended points' extra seeds still to run)"
    assert R.status_tag(res) == ""
    gap = {**open_, "points": [p for p in res["points"] if not (p["method"] == "ica" and p["alpha"] == 1.0)]}
    assert not R.swept(gap) and R.status_tag(gap).startswith(" (unfinished: steps measured so far dva 10, 20;")
    line = next(ln for ln in R.render_section([gap]).splitlines() if ln.startswith("- Frontier"))
    assert "level: yes (provisional: the sweep is unfinished)" in line
    # The DVA point's target waits for the whole result (its seeds): provisional until then.
    assert R._verdict({"complete": False}, True) == "yes (provisional: the sweep is unfinished)"
    assert R._verdict({"complete": True}, False) == "no" and R._verdict({"complete": False}, None) == "not measured"
    assert R._verdict(open_, True) == "yes (provisional: the recommended points' seeds still to run)"
    # The DVA point with its own seeds in is final even while other methods' seeds are missing.
    assert R._verdict(open_, False, R._seeded(open_, open_["recommended"]["dva"])) == "no"
    one_seed = {**open_, "recommended": {**open_["recommended"], "dva": {**open_["recommended"]["dva"], "stats": {
        **open_["recommended"]["dva"]["stats"], "seeds": [0]}}}}
    assert R._seeded(open_, open_["recommended"]["dva"]) and not R._seeded(one_seed, one_seed["recommended"]["dva"])
    sm = R.summary(res)
    far = {**sm, "dva_vs_full": None}
    assert "ranges that do not overlap; not compared." in R.frontier_words(res, far)
    shared = {**sm, "dva_vs_full": {**sm["dva_vs_full"], "min_diff": None, "levels": []}}
    assert "share no measured ID R@1 level but the frozen point" in R.frontier_words(res, shared)
    unskipped = {**sm, "dva_vs_full": {**sm["dva_vs_full"], "skipped": False}}
    assert "frozen point left out" not in R.frontier_words(res, unskipped)
    assert "frozen point left out" in R.frontier_words(res, sm)


def test_numbers_that_round_to_zero_carry_no_sign():
    from benchmarks.datasets.render import num

    assert [num(-0.02, signed=True), num(0.04, signed=True), num(-0.04), num(0.06, signed=True)] == \
        ["0.0", "0.0", "0.0", "+0.1"]


# ----------------------------------------------------------------------------- the runner (a fake worker)
FAKE_WORKER = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    spec = json.loads(Path(sys.argv[1]).read_text())
    fr, ov = spec["frontier"], spec["overrides"]
    def last(k, d=None):
        v = [ov[i + 1] for i, t in enumerate(ov[:-1]) if t == k]
        return v[-1] if v else d
    out = Path(spec["out"])
    with open(os.environ["FAKE_LOG"], "a") as f:
        f.write(out.name + " " + ",".join(map(str, fr["alphas"])) + "\\n")
    if os.environ.get("FAKE_FAIL") and out.name.startswith(os.environ["FAKE_FAIL"]):
        sys.exit(3)
    seed, b = int(last("--train.seed", "0")), fr["budget"]
    best = fr.get("model", "last") == "best"  # a timed run: validated every epoch, its best model scored
    assert not best or last("--train.eval_every") == "1", ov
    stop = bool(best and os.environ.get("FAKE_STOP") and out.name.startswith(os.environ["FAKE_STOP"]))
    guard = bool(os.environ.get("FAKE_GUARD") and out.name.startswith(os.environ["FAKE_GUARD"]))  # collapse guard
    trained, b = (b // 2, b // 4) if stop or guard else (b, b)  # stopped at half its steps, its best at a quarter
    stop = stop and not guard
    m0 = {"dva": 0.40, "ica": 0.38, "full": 0.42, "frozen": 0.30, "dva_anchor": 0.39}.get(fr["method"], 0.395)
    drop = {"full": 0.2, "dva_anchor": 0.02}.get(fr["method"], 0.05)  # OOD R@1 lost per unit of alpha
    def scores(a):
        v = 0.30 if a == 0 else m0 + 0.001 * b * a * (1.5 - a) + 0.001 * seed   # 0.5 and 1 tie on validation
        test = 0.5 + 0.2 * a + (0.1 if fr["method"] == "full" else 0.0) + 0.002 * b * a + 0.01 * seed
        ood = 0.6 - drop * a - 0.001 * b * a
        sets = {"val": {"recall@1": v + 0.2, "map@r": v}, "test": {"recall@1": test, "map@r": test / 2}}
        sets.update({g["name"]: {"recall@1": ood, "map@r": ood / 2} for g in fr["ood"]})
        return sets
    train = spec["kind"] == "train"
    fast = 0.8 if os.environ.get("FAKE_FAST") and out.name.startswith(os.environ["FAKE_FAST"]) else 1.0
    res = {"name": spec["name"], "method": fr["method"], "budget": fr["budget"], "seed": seed, "kind": spec["kind"],
           "folder": out.name, "steps": trained if train else 0, "train_seconds": {"dva": 15.0, "ica": 18.0, "full": 24.0, "dva_anchor": 16.0}.get(fr["method"], 0.0) * trained * fast
           if train else 0.0, "model_step": b if train else None, "early_stop": "early stop" if stop else None,
           "status": "stopped" if guard else "completed", "prep_seconds": 0.0, "images_processed": 32 * b if train else 0,
           "metrics": {"recall@1": 0.5, "map@r": 0.3}, "scores": {format(float(a), "g"): scores(a) for a in fr["alphas"]},
           "sweep": {"image_alphas": 100 * len(fr["alphas"]), "embed_seconds": 30.0 * len(fr["alphas"]),
                     "naive_seconds_estimate": 60.0 * len(fr["alphas"]), "decoded_images": 0, "cached_images": 100}}
    (out / "result.json").write_text(json.dumps(res))
''')


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Runs go to a fake worker (scores from method, budget, alpha, seed; no torch); returns the call log."""
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    log = tmp_path / "invocations.log"
    log.write_text("")
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setattr(C, "child_command", lambda _f, _w, spec: [sys.executable, str(script), spec])
    gals = [O.Gallery("pets37", "folder", "P", "all"), O.Gallery("cars196", "cars196", "C", "test")]
    monkeypatch.setattr(O, "galleries", lambda *a, **k: (gals, ["aircraft47"]))
    return lambda: [ln.split() for ln in log.read_text().splitlines()]


def _args(tmp_path, *extra):
    sel = _select_json(tmp_path / "sel.json")
    return FR.build_parser().parse_args(["--dataset", "cub100", "--select", str(sel), "--budgets", "10,20",
                                         "--alphas", "0,0.5,1", "--seeds", "2", "--methods", "dva,ica,full", *extra])


def _profile(tmp_path, *extra, work="work", reuse=None, out="f.json"):
    """A profile whose frontier.yaml is budgets 10, 20, alphas 0, 0.5, 1, 2 seeds (what _args runs)."""
    ctx = D.Context(P.TABLE, "cub100", "mobilenetv2", "ROOT", tmp_path / work, tmp_path / "cache", 1,
                    FR.reuse_index(reuse))
    sw = FR._sweep(_args(tmp_path, *extra), ctx)
    three = {k: v for k, v in sw.frontier.methods.items() if k in ("dva", "ica", "full")}
    sw = sw._replace(frontier=sw.frontier._replace(budgets=[10, 20], alphas=[0.0, 0.5, 1.0], seeds=2, methods=three))
    return FR.run_profile(ctx, sw, tmp_path / out, ["--dataset", "cub100"])


def test_the_seeds_spread_reaches_the_equal_compute_words(tmp_path, fake):
    res = _profile(tmp_path)  # every budget and both seeds of the recommended points
    sm = R.summary(res)
    noise = sm["seed_noise"]
    assert noise is not None and noise["seeds"] == 2
    assert noise["std"] == max(r["stats"]["id_r1"][1] for r in res["recommended"].values()
                               if r.get("stats") and len(r["stats"]["seeds"]) >= 2)
    measured = [e for e in sm["equal_time"] if sum(v is not None for v in e["id_r1"].values()) >= 2]
    assert measured
    # A spread wider than any lead: nobody is ahead anywhere, and the words say why.
    wide = json.loads(json.dumps(res))
    wide["recommended"]["full"]["stats"]["id_r1"][1] = 1000.0
    sm = R.summary(wide)
    assert sm["seed_noise"]["std"] == 1000.0 and sm["seed_noise"]["method"] == "full"
    for e in sm["equal_time"]:
        if sum(v is not None for v in e["id_r1"].values()) >= 2:
            assert e["ahead"] is None and (e["within_noise"] or e["tie"])
    words = R.time_words(wide, sm)
    assert "no method ahead by more than the seeds' spread" in words and " ahead (" not in words
    assert "a lead of at most 1000.0 R@1, the largest std over seeds of a recommended point's test ID R@1 " \
           "(full fine-tune (WiSE-FT), 2 seeds), is no lead" in words


def test_sittings_gather_their_budgets_in_one_json(tmp_path, fake):
    """--budgets splits a profile into sittings: each JSON holds every budget finished so far, and only
    the whole profile (every budget, the seeds) is complete."""
    first = _profile(tmp_path, "--budgets", "10", "--seeds", "1")
    assert first["settings"]["budgets"] == [10] and not first["complete"]
    n = len(fake())
    second = _profile(tmp_path, "--budgets", "20", "--seeds", "1")
    assert len(fake()) == n + 3  # only the 20-step runs (frozen: resumed from its folder)
    assert second["settings"]["budgets"] == [10, 20] and not second["complete"]  # 1 seed of 2
    assert {(q["method"], q["budget"]) for q in second["points"] if not q["frozen"]} == {
        (m, b) for m in ("dva", "ica", "full") for b in (10, 20)}
    assert second["recommended"]["dva"]["budget"] == 20  # chosen over both sittings' budgets
    whole = _profile(tmp_path)  # every budget (all resumed) and the seeds
    assert whole["complete"] and whole["points"] == _profile(tmp_path)["points"]
    # A JSON of other settings (here other alphas) is not merged: its runs were scored otherwise.
    other = _profile(tmp_path, "--budgets", "10", "--seeds", "1", "--alphas", "0,1", out="f.json")
    assert other["settings"]["budgets"] == [10]


def _pairs(res):
    return {(r["method"], r["budget"]) for r in res["runs"] if r["seed"] == 0 and r["method"] != "frozen"}


def test_sittings_by_method_keep_every_point_and_complete_needs_every_pair(tmp_path, fake):
    # A first sitting without DVA: the words say DVA's points are not measured (frontier.yaml's label).
    first = _profile(tmp_path, "--budgets", "20", "--methods", "ica", "--seeds", "1", out="h.json")
    assert "- The validation-chosen DVA point: not measured." in R.render_section([first])
    a = _profile(tmp_path, "--budgets", "20", "--methods", "dva", "--seeds", "1")
    b = _profile(tmp_path, "--budgets", "20", "--methods", "ica,full", "--seeds", "1")
    assert _pairs(b) == {("dva", 20), ("ica", 20), ("full", 20)} and not a["complete"] and not b["complete"]
    assert [m for m in b["settings"]["methods"]] == ["dva", "ica", "full"]  # frontier.yaml's order
    # Budget 10 of every method with the seeds: every (method, budget) pair is there now.
    whole = _profile(tmp_path, "--budgets", "10")
    assert _pairs(whole) == {(m, bb) for m in ("dva", "ica", "full") for bb in (10, 20)} and whole["complete"]
    # Only dva at 20 before, then budget 10 of all with the seeds: ica and full at 20 are missing.
    _profile(tmp_path, "--budgets", "20", "--methods", "dva", "--seeds", "1", out="g.json")
    part = _profile(tmp_path, "--budgets", "10", out="g.json")
    assert ("ica", 20) not in _pairs(part) and not part["complete"]
    # A method whose settings changed since (here its label) is not carried over.
    res = json.loads((tmp_path / "g.json").read_text())
    res["settings"]["methods"]["dva"]["label"] = "DVA (older)"
    (tmp_path / "g.json").write_text(json.dumps(res))
    again = _profile(tmp_path, "--budgets", "10", "--methods", "ica", "--seeds", "1", out="g.json")
    assert ("dva", 20) not in _pairs(again) and ("dva", 10) not in _pairs(again) and ("full", 10) in _pairs(again)


def test_profile_sweep_choice_seeds_and_json(tmp_path, fake):
    res = _profile(tmp_path)
    calls = fake()
    # frozen once (alpha 0), 3 methods x 2 budgets at the non-zero alphas, then 1 more seed per recommended point
    assert calls[0][0].startswith("frozen_s0_") and calls[0][1] == "0.0"
    assert [c[0].split("_s0_")[0] for c in calls[1:7]] == ["dva_b10", "ica_b10", "full_b10",
                                                          "dva_b20", "ica_b20", "full_b20"]
    assert all(c[1] == "0.5,1.0" for c in calls[1:7])
    assert sorted(c[0].split("_s1_")[0] + " " + c[1] for c in calls[7:]) == ["dva_b20 0.5", "full_b20 0.5",
                                                                             "ica_b20 0.5"]
    assert json.loads((tmp_path / "f.json").read_text()) == res and res["complete"]
    rec = res["recommended"]["dva"]  # validation: 0.5 and 1 tie on both scores -> the smaller alpha, budget 20
    assert (rec["budget"], rec["alpha"], rec["seeds_label"]) == (20, 0.5, "2 seeds")
    assert rec["stats"]["id_r1"][0] == pytest.approx(100 * (0.5 + 0.1 + 0.02 + 0.005))  # seeds 0, 1: +0, +1 point
    assert rec["stats"]["id_r1"][1] == pytest.approx(math.sqrt(0.5))
    assert res["settings"]["ood"] == ["pets37", "cars196"] and res["settings"]["ood_missing"] == ["aircraft47"]
    assert res["settings"]["selected"] and res["settings"]["chosen_tokens"]["opa"] == ["--loss.beta", "2"]
    assert len(res["points"]) == 1 + 6 * 2 and res["points"][0]["frozen"]
    p = next(q for q in res["points"] if (q["method"], q["budget"], q["alpha"]) == ("full", 20, 1.0))
    assert p["id_r1"] == pytest.approx(100 * (0.5 + 0.2 + 0.1 + 0.04)) and p["train_minutes"] == pytest.approx(8.0)
    assert p["mean_ood"] == pytest.approx(100 * (0.6 - 0.2 - 0.02)) and p["images"] == 640
    assert len(res["runs"]) == 1 + 6 + 3 and res["summary"]["dva_vs_full"] is not None


def test_profile_resumes_rescores_and_reuses(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "full_b20")
    with pytest.raises(RuntimeError, match="failed"):
        _profile(tmp_path)
    first = fake()
    partial = json.loads((tmp_path / "f.json").read_text())  # written after every finished run
    assert not partial["complete"] and len(partial["runs"]) == 1 + 5
    monkeypatch.delenv("FAKE_FAIL")
    res = _profile(tmp_path)
    again = fake()[len(first):]
    assert again[0][0].startswith("full_b20_s0_") and len(again) == 1 + 3  # only the killed run and the seeds
    n = len(fake())
    assert _profile(tmp_path)["points"] == res["points"] and len(fake()) == n  # finished: nothing runs
    # More alphas: each finished run is run again for the missing ones only (its training kept by the worker).
    more = _profile(tmp_path, "--alphas", "0,0.25,0.5,1")
    rescored = fake()[n:]
    assert len(rescored) == 6 and all(c[1] == "0.25,0.5,1.0" for c in rescored)
    assert len(more["points"]) == 1 + 6 * 3
    # --reuse in a fresh work folder: every run of the same settings comes from the JSON, none runs.
    n = len(fake())
    reused = _profile(tmp_path, reuse=[str(tmp_path / "f.json")], work="work2", out="g.json")
    assert len(fake()) == n and reused["points"] == res["points"]
    assert all(r["reused_from"].endswith("f.json") for r in reused["runs"])


def test_unselected_profile_is_labelled(tmp_path, fake):
    res = _profile(tmp_path, "--unselected", "--methods", "dva", "--budgets", "10", "--seeds", "1")
    assert not res["settings"]["selected"] and "UNSELECTED" in res["settings"]["selection"]
    assert res["settings"]["select_json"] is None and len(fake()) == 2
    assert res["settings"]["chosen_tokens"] == F.first_candidates(P.TABLE, "mobilenetv2")
    assert "UNSELECTED" in R.render_section([res]).splitlines()[0]
    from benchmarks.frontier import docs as FD

    words = FD.readme_body([{**res, "complete": False}])  # a sitting of some budgets: the README says so
    assert "- cub100 x mobilenetv2 (unfinished: steps measured so far dva 10):" in words  # the points, not the plan
    assert "(unfinished" not in FD.readme_body([{**res, "complete": True}])
    # a --seeds 1 sitting does not lower the profile's seeds (the fixture's frontier.yaml: 2): one seed is
    # not final, the words say 2 are due
    assert res["settings"]["seeds"] == 2 and not res["complete"]
    assert ("; the recommended points (validation MAP@R) 2 seeds once the sweep is finished"
            in R.render_section([res]))


# ----------------------------------------------------------------------------- rendering
def _cells(table: str) -> dict[tuple[str, ...], list[str]]:
    """A markdown table's rows by their first three cells."""
    rows = [[c.strip() for c in ln.split("|")[1:-1]] for ln in table.splitlines()[2:]]
    return {tuple(r[:3]): r for r in rows}


def test_render_traces_every_number_to_the_json(tmp_path, fake):
    res = _profile(tmp_path)
    text = R.render_section([res])
    points, rec = R.points_table(res), R.recommended_table(res)
    assert points in text and rec in text
    # The full fine-tune at 20 steps, alpha 1 (fake: val 0.42 + 0.01, test 0.84, OOD 0.38, 24 s x 20, 640 images)
    row = _cells(points)["full fine-tune (WiSE-FT)", "20", "1"]
    assert row[3:] == ["63.0", "43.0", "84.0", "42.0", "38.0", "38.0", "38.0", "8.0", "640"]
    assert _cells(points)["frozen backbone", "-", "0"][3:7] == ["50.0", "30.0", "50.0", "25.0"]
    dva = _cells(rec)["DVA", "20", "0.5"]  # the recommended point: 2 seeds, mean ± SD
    assert dva[3:7] == ["2 seeds", "41.0", "62.5 ± 0.7", "31.2 ± 0.4"]
    sm = R.summary(res)
    c = sm["dva_vs_full"]
    assert f"is {c['min_diff']:+.1f} at its least" in text and f"{c['mean_diff']:+.1f} on average" in text
    assert c["at_or_above"] is True and c["target_met"] == (c["min_diff"] >= 1.0)
    assert c["levels"][0]["id_r1"] == pytest.approx(61.0) and c["levels"][0]["diff"] == pytest.approx(2.5)
    # Equal time (fake clocks: DVA 2.5 / 5 min, ICA 3 / 6, full 4 / 8): at 5 min, interpolated; 15 and 45 outside.
    e = sm["equal_time"][0]
    assert e["id_r1"] == pytest.approx({"dva": 74.0, "ica": 72 + 2 * 2 / 3, "full": 82.5}) and e["ahead"] == "full"
    assert ("at 5 min: full fine-tune (WiSE-FT) ahead (DVA 74.0, ICA alone 73.3, full fine-tune (WiSE-FT) 82.5);"
            in text)
    assert "at 15 min: not measured; at 45 min: not measured." in text
    t2 = sm["target2"]
    assert t2["ood_floor"] == pytest.approx(60.0 - 1.0) and t2["ood_r1"] == pytest.approx(56.5)
    assert t2["id_r1"] == pytest.approx(62.5) and t2["full_r1"] is None and t2["holds"] is None  # no 184-step run
    assert "test ID R@1 62.5 against the 184-step full fine-tune's - (not measured)" in text
    assert "pets37 R@1 56.5 against frozen - 1 = 59.0 (no)" in text
    # the sweeps: frozen (1 alpha) + 6 runs x 2 alphas + 3 seeds x 1 alpha = 16 (run, alpha) pairs of 100 images
    assert sm["sweep_cost"]["image_alphas"] == 1600 and sm["sweep_cost"]["saved_fraction"] == pytest.approx(0.5)
    assert "1,600 (image, alpha) embeddings in 8.0 min, against ~16.0 min" in text and "50% less" in text
    assert "; networks on torch)." in text  # the fake runs name no runtime: torch, as every run before the field
    assert R.runtime_words({"onnx": 3}) == "networks on onnxruntime"
    assert R.runtime_words({"onnx": 3, "torch": 2}) == "networks on onnxruntime (3 runs) and torch (2 runs)"
    figs = R.figures([res], tmp_path / "docs")
    assert [f.name for f in figs] == ["frontier_cub100_mobilenetv2.png", "frontier_time_cub100_mobilenetv2.png"]
    assert all(f.stat().st_size > 1000 for f in figs)
    assert FR.main(["--render", str(tmp_path / "f.json"), "--markdown", str(tmp_path / "t.md")]) == 0
    assert (tmp_path / "t.md").read_text() == text


def test_the_anchored_dva_is_compared_with_both_references(tmp_path, fake):
    """frontier.yaml's design change (DVA + frozen anchor) gets its own line against the full fine-tune
    and against DVA, each figure from analysis.compare; without it the words are as before."""
    res = _profile(tmp_path, "--methods", "dva,ica,full,dva_anchor", "--seeds", "1")
    sm = R.summary(res)
    assert set(sm["pairs"]) == {"dva_anchor_vs_full", "dva_anchor_vs_dva"}
    text = R.render_section([res])
    for key, other in (("dva_anchor_vs_full", "full fine-tune (WiSE-FT)"), ("dva_anchor_vs_dva", "DVA")):
        c = sm["pairs"][key]
        fa, fb = ([tuple(p) for p in sm["frontiers"][m]] for m in key.split("_vs_"))
        assert c == A.compare(fa, fb, (50.0, 60.0))  # the shared frozen point (fake: ID 50, OOD 60) left out
        line = next(ln for ln in text.splitlines() if ln.startswith(f"- DVA + frozen anchor against {other},"))
        assert f"{c['min_diff']:+.1f} at its least" in line and f"{c['mean_diff']:+.1f} on" in line
    # The fake anchor loses 0.02 OOD per alpha against DVA's 0.05 at the same ID R@1: above DVA everywhere.
    assert sm["pairs"]["dva_anchor_vs_dva"]["at_or_above"] is True
    # Its validation-chosen point is held to the target's two conditions, in a line of its own.
    g = sm["target2_extra"]["dva_anchor"]
    rec = res["recommended"]["dva_anchor"]
    assert g == R._target2(res, "dva_anchor") and g["id_r1"] == rec["stats"]["id_r1"][0]
    line = next(ln for ln in text.splitlines() if ln.startswith("- The validation-chosen DVA + frozen anchor point"))
    assert f"test ID R@1 {g['id_r1']:.1f}" in line and "Both conditions (the target's, for this method): " in line
    assert R.summary(_profile(tmp_path, out="g.json"))["pairs"] == {}
    assert R.summary(_profile(tmp_path, out="h.json"))["target2_extra"] == {}


def test_recommended_points_side_by_side_against_the_full_fine_tune(tmp_path, fake):
    res = _profile(tmp_path, "--methods", "dva,ica,full,dva_anchor", "--seeds", "2")
    recs = res["recommended"]
    d = R.recommended_deltas(res)
    assert set(d) == {"dva", "ica", "dva_anchor"}  # every method but the reference
    for m, v in d.items():
        assert v["id_r1"] == recs[m]["stats"]["id_r1"][0] - recs["full"]["stats"]["id_r1"][0]
        assert v["mean_ood"] == recs[m]["stats"]["mean_ood"][0] - recs["full"]["stats"]["mean_ood"][0]
    line = next(ln for ln in R.render_section([res]).splitlines()
                if ln.startswith("- The validation-chosen points against the full fine-tune's"))
    assert f"DVA + frozen anchor ({R._where(recs['dva_anchor'])}; 2 seeds) {d['dva_anchor']['id_r1']:+.1f} ID R@1" in line
    assert "Provisional" not in line  # a complete result

    # Hand-made stats: "higher on both" only when both printed differences are above 0.0.
    def rec(id_r1, ood):
        return {"frozen": False, "budget": 5, "alpha": 1.0, "seeds_label": "3 seeds",
                "stats": {"seeds": [0, 1, 2], "id_r1": [id_r1, 0.1], "mean_ood": [ood, 0.1]}}

    hand = {**res, "settings": {**res["settings"], "seeds": 3}, "recommended": {"full": rec(80.0, 50.0), "dva": rec(81.0, 50.04), "ica": rec(80.5, 50.5),
                                   "dva_anchor": rec(79.0, 49.0)}}
    d = R.recommended_deltas(hand)
    assert not d["dva"]["higher_on_both"] and not d["dva"]["lower_on_both"]  # +0.04 prints as 0.0: no lead
    assert d["ica"]["higher_on_both"] and d["dva_anchor"]["lower_on_both"]
    words = R.recommended_words(hand)
    assert "Provisional" not in words  # every point's 3 seeds in
    assert "DVA (5 steps, alpha 1; 3 seeds) +1.0 ID R@1 and 0.0 mean OOD R@1;" in words
    assert "+0.5 ID R@1 and +0.5 mean OOD R@1 (higher on both)" in words and "(lower on both)." in words
    assert "Provisional: the recommended points' seeds still to run." in R.recommended_words(
        {**hand, "recommended": {**hand["recommended"], "dva": {
            **hand["recommended"]["dva"], "stats": {**hand["recommended"]["dva"]["stats"], "seeds": [0]}}}})
    no_full = {**hand, "recommended": {k: v for k, v in hand["recommended"].items() if k != "full"}}
    assert R.recommended_deltas(no_full) == {} and R.recommended_words(no_full) is None


# ----------------------------------------------------------------------------- end to end (real worker)
@pytest.mark.slow
def test_real_profile_on_generated_data(tmp_path, monkeypatch):
    """Two budgets of DVA and the full fine-tune on a generated dataset, 64 px, through subprocess workers."""
    from dva.data import make_synthetic

    root = make_synthetic(str(tmp_path / "data"), num_classes=8, per_class=6, size=64, seed=0)
    oroot = make_synthetic(str(tmp_path / "ood"), num_classes=4, per_class=4, size=64, seed=1)
    ds = P.DatasetSpec("cub100", "synthetic", "X", "x", "bird", 2, (24, 24))
    table = P.TABLE._replace(datasets={**P.TABLE.datasets, "cub100": ds},
                             backbones={**P.TABLE.backbones, "mobilenetv2": P.TABLE.backbones["mobilenetv2"]
                                        ._replace(img_size=64)})
    monkeypatch.setattr(O, "galleries", lambda *a, **k: ([O.Gallery("synthood", "synthetic", oroot, "all")], []))
    ctx = D.Context(table, "cub100", "mobilenetv2", root, tmp_path / "work", tmp_path / "cache", 1, {})
    sw = FR._sweep(_args(tmp_path, "--budgets", "1,2", "--methods", "dva,full", "--seeds", "2"), ctx)
    res = FR.run_profile(ctx, sw, tmp_path / "f.json", [])
    fz = next(r for r in res["runs"] if r["kind"] == "frozen")
    assert set(fz["scores"]) == {"0"} and set(fz["scores"]["0"]) == {"val", "test", "synthood"}
    trained = [r for r in res["runs"] if r["kind"] == "train" and r["seed"] == 0]
    assert {(r["method"], r["steps"]) for r in trained} == {("dva", 1), ("dva", 2), ("full", 1), ("full", 2)}
    for r in trained:
        assert r["budget"] == r["steps"] == r["trainer_budget"]["steps"] and r["status"] == "completed"
        assert set(r["scores"]) == {"0.5", "1"} and r["images_processed"] > 0 and r["wall_seconds"] > 0
        assert r["sweep"]["image_alphas"] == 2 * r["sweep"]["images"] and "loadavg_1m" in r and "commit" in r
    assert any(r["sweep"]["cached_images"] for r in trained)  # decoded by the frozen run, read from the file cache
    # The first DVA run stored its frozen prefix on every set; the second (the other budget) read it back.
    cached = [r["sweep"]["cached_prefix_images"] for r in trained if r["method"] == "dva"]
    assert sorted(cached) == [0, sum(fz["sets"].values())]
    assert all("cached_prefix_images" not in r["sweep"] for r in trained if r["method"] == "full")
    assert len(list((tmp_path / "cache" / "frontier_prefix").glob("*.npy"))) == len(fz["sets"])
    # Finished, but a part of frontier.yaml's profile (two of its methods, other budgets): not complete.
    assert len(res["points"]) == 1 + 4 * 2 and not res["complete"]
    assert set(res["recommended"]) == {"dva", "full"}
    for m, rec in res["recommended"].items():  # the best validation MAP@R of the method's points (frozen included)
        cands = [p for p in res["points"] if p["method"] == m or p["frozen"]]
        assert rec["val_map"] == max(p["val_map"] for p in cands)
        if not rec["frozen"]:  # its second seed, scored at the chosen alpha only
            seeds = [r for r in res["runs"] if r["method"] == m and r["seed"] == 1]
            assert [set(r["scores"]) for r in seeds] == [{format(rec["alpha"], "g")}]
            assert rec["stats"]["seeds"] == [0, 1]
    # Run again: every run is finished, nothing is trained or scored.
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "work").glob("*/result.json")}
    assert FR.run_profile(ctx, sw, tmp_path / "f.json", [])["points"] == res["points"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "work").glob("*/result.json")} == mtimes
    # One more alpha: each trained run scores it with its finished training (not trained again).
    sw2 = FR._sweep(_args(tmp_path, "--budgets", "1,2", "--methods", "dva,full", "--seeds", "2",
                          "--alphas", "0,0.25,0.5,1"), ctx)
    more = {r["folder"]: r for r in FR.run_profile(ctx, sw2, tmp_path / "f.json", [])["runs"]}
    for r in trained:
        m = more[r["folder"]]
        assert m["training_reused"] and m["train_seconds"] == r["train_seconds"]
        assert set(m["scores"]) == {"0.25", "0.5", "1"} and m["scores"]["1"] == r["scores"]["1"]
        assert m["sweep"]["image_alphas"] == m["sweep"]["images"]  # only alpha 0.25 embedded


def test_frontier_run_trains_without_the_test_images_then_scores_them(tmp_path, monkeypatch):
    """A DVA run (1 step, 64 px) in the worker's process: the trainer opens no test image and trains
    without the validation classes; then validation, test and OOD are scored from the last model."""
    import PIL.Image

    import dva_train.train as T
    from dva.config import load_config
    from dva.data import load_split, make_synthetic

    root = make_synthetic(str(tmp_path / "data"), num_classes=8, per_class=6, size=64, seed=0)
    oroot = make_synthetic(str(tmp_path / "ood"), num_classes=3, per_class=4, size=64, seed=1)
    split = load_split("synthetic", root, "open")
    test = {r.path for r in split.test}
    val = {r.path for r in split.train if r.label in split.train_classes[-2:]}
    ds = P.DatasetSpec("cub100", "synthetic", "X", "x", "bird", 2, (24, 24))
    table = P.TABLE._replace(datasets={**P.TABLE.datasets, "cub100": ds})
    base = F.common(table, "cub100", "mobilenetv2", root, tmp_path / "cache", 1)
    spec = F.method_run(table, "cub100", "mobilenetv2", base, F.first_candidates(table, "mobilenetv2"),
                        F.FRONTIER.methods["dva"], 1, 0)
    out = tmp_path / spec.tag
    cfg = load_config("demo", spec.overrides + ["--backbone.img_size", "64", "--output_dir", str(out)])
    opened: list[tuple[str, bool]] = []
    training = [False]
    real_open, real_train = PIL.Image.open, T.train

    def spy_train(*a, **k):
        training[0] = True
        try:
            return real_train(*a, **k)
        finally:
            training[0] = False

    monkeypatch.setattr(PIL.Image, "open", lambda fp, *a, **k: (opened.append((str(fp), training[0])),
                                                                 real_open(fp, *a, **k))[1])
    monkeypatch.setattr(T, "train", spy_train)
    fr = {"method": "dva", "budget": 1, "dial": "ica_scale", "alphas": [1.0], "image_cache": None,
          "ood": [{"name": "synthood", "reader": "synthetic", "root": oroot, "part": "all"}]}
    res = W.run_frontier({"name": "dva", "kind": "train", "threads": 1, "frontier": fr}, cfg, out, D.test_split_withheld)
    in_training = {p for p, t in opened if t}
    assert in_training and not in_training & test  # the trainer never opened a test image
    assert {p for p, t in opened if not t} >= test  # scored afterwards
    assert res["steps"] == 1 == res["budget"] and res["eval_split"] == "val" and not res["training_reused"]
    assert res["early_stop"] is None and res["checkpoint"].endswith("last.safetensors")  # the fixed budget's last model
    assert res["images_processed"] == res["batch"]["classes_per_batch"] * res["batch"]["images_per_class"]
    assert res["sets"] == {"val": len(val), "test": len(test), "synthood": 12}
    assert set(res["scores"]["1"]) == {"val", "test", "synthood"}
    # The trainer's own validation evaluation (the last model) = the sweep's alpha 1 on the validation classes
    assert res["scores"]["1"]["val"]["recall@1"] == pytest.approx(res["metrics"]["recall@1"], abs=1e-9)


def test_a_timed_run_scores_the_model_its_validation_chose(tmp_path, monkeypatch):
    """A timed run (frontier.yaml's timed_select: validated every epoch) in the worker's process: the model
    scored is best.safetensors, the validation figure the trainer kept it for equals the sweep's."""
    from dva.config import load_config
    from dva.data import make_synthetic

    root = make_synthetic(str(tmp_path / "data"), num_classes=8, per_class=6, size=64, seed=0)
    ds = P.DatasetSpec("cub100", "synthetic", "X", "x", "bird", 2, (24, 24))
    table = P.TABLE._replace(datasets={**P.TABLE.datasets, "cub100": ds})
    base = F.common(table, "cub100", "mobilenetv2", root, tmp_path / "cache", 1)
    spec = F.method_run(table, "cub100", "mobilenetv2", base, F.first_candidates(table, "mobilenetv2"),
                        F.timed_method(F.FRONTIER.methods["dva"], F.FRONTIER), 4, 0)
    plain = F.method_run(table, "cub100", "mobilenetv2", base, F.first_candidates(table, "mobilenetv2"),
                         F.FRONTIER.methods["dva"], 4, 0)
    assert spec.tag != plain.tag  # its own folder: a run validated otherwise is another run
    out = tmp_path / spec.tag
    cfg = load_config("demo", spec.overrides + ["--backbone.img_size", "64", "--output_dir", str(out)])
    assert (cfg.train.eval_every, cfg.train.patience) == (F.FRONTIER.timed_eval_every, F.FRONTIER.timed_patience)
    given, dial = [], W._dial
    monkeypatch.setattr(W, "_dial", lambda kind, d, c, checkpoint, *a, **k: (given.append(checkpoint),
                                                                            dial(kind, d, c, checkpoint, *a, **k))[1])
    fr = {"method": "dva", "budget": 4, "dial": "ica_scale", "alphas": [1.0], "image_cache": None, "ood": [],
          "model": "best"}
    res = W.run_frontier({"name": "dva", "kind": "train", "threads": 1, "frontier": fr}, cfg, out, D.test_split_withheld)
    summary = json.loads((out / "summary.json").read_text())
    best = summary["checkpoints"]["best"]
    assert summary["status"] == "completed" and summary["steps"] == 4 and summary["eval_every"] == 1
    assert given == [best["path"]] and best["path"].endswith("best.safetensors") and res["model_step"] == best["step"]
    assert res["scores"]["1"]["val"]["map@r"] == pytest.approx(best["map@r"], abs=1e-6)
    with pytest.raises(RuntimeError, match="no validation-chosen one"):
        W.scored_model({**summary, "checkpoints": {"last": summary["checkpoints"]["last"], "best": None}}, "best")
    assert W.scored_model(summary, "last") == (summary["checkpoint"], summary["steps"])


def test_plan_sittings_split_a_long_profile_by_budget_then_method():
    from types import SimpleNamespace

    ctx = SimpleNamespace(dataset="cub100", backbone="mobilenetv2")
    assert FR.sittings(ctx, [("dva", 60, 600.0), ("full", 60, 600.0)]) == []  # fits: one command
    lines = FR.sittings(ctx, [("dva", 60, 3000.0), ("full", 60, 3000.0), ("dva", 552, 4000.0), ("full", 552, 4000.0)])
    assert len(lines) == 4 and all("--seeds 1" in ln for ln in lines[1:])
    assert lines[1].rstrip().endswith("--budgets 60   (~100 min)")
    assert "--budgets 552 --methods dva   (~67 min)" in lines[2] and "--methods full" in lines[3]


def test_plan_estimates_from_measured_frontier_runs(tmp_path, monkeypatch):
    """--plan: a method with finished frontier runs on the backbone is estimated from them (its
    sweep's measured cost per (image, alpha)); a re-scored run gives no step figure, another
    backbone's and a reused run count nothing."""
    images = sum(P.TABLE.datasets["cub100"].images)

    def run(method, steps, train, embed, ia, wall, **kw):
        return {"method": method, "steps": steps, "train_seconds": train, "wall_seconds": wall,
                "sweep": {"embed_seconds": embed, "image_alphas": ia}, **kw}

    res = {"settings": {"dataset": "cub100", "model": "mobilenetv2_100", "img_size": 224},
           "runs": [run("frozen", 0, 0.0, 100.0, 10_000, 100.0 + images * 0.01),
                    run("dva", 100, 50.0, 40.0, 40_000, 90.0 + images * 0.02),
                    run("dva", 300, 150.0, 40.0, 40_000, 190.0 + images * 0.02),
                    run("full", 60, 60.0, 400.0, 40_000, 500.0, training_reused=True),
                    run("ica", 60, 1.0, 1.0, 100, 9.0, reused_from="x.json")]}
    other = {"settings": {"dataset": "cub100", "model": "tf_efficientnet_lite2", "img_size": 260},
             "runs": [run("dva", 100, 999.0, 999.0, 10, 9999.0)]}
    (tmp_path / "a.json").write_text(json.dumps(res))
    (tmp_path / "b.json").write_text(json.dumps(other))
    got = FR.measured_costs(P.TABLE, "mobilenetv2_100", 224, sorted(tmp_path.glob("*.json")))
    assert set(got) == {"frozen", "dva", "full"}  # the reused ica run counts nothing
    assert got["dva"].s_per_step == pytest.approx(0.5) and got["dva"].s_per_image_alpha == pytest.approx(0.001)
    assert got["dva"].overhead_per_image == pytest.approx(0.02) and got["dva"].runs == 2
    assert got["full"].s_per_step is None and got["full"].s_per_image_alpha == pytest.approx(0.01)
    assert got["frozen"].overhead_per_image == pytest.approx(0.01)
    # Scored on onnxruntime: a method's runs of that runtime set its scoring cost, when it has any.
    res["runs"].append(run("dva", 200, 100.0, 10.0, 40_000, 150.0 + images * 0.02))
    res["runs"][-1]["sweep"]["runtime"] = "onnx"
    (tmp_path / "a.json").write_text(json.dumps(res))
    onnx = FR.measured_costs(P.TABLE, "mobilenetv2_100", 224, sorted(tmp_path.glob("*.json")), runtime="onnx")
    assert onnx["dva"].s_per_image_alpha == pytest.approx(0.00025) and onnx["dva"].runs == 3
    assert onnx["full"].s_per_image_alpha == pytest.approx(0.01)  # no onnx run of its own: all of them
    res["runs"].pop()
    (tmp_path / "a.json").write_text(json.dumps(res))
    # The plan uses them: dva 60 steps = overhead + 60 steps + 4 alphas x the images scored.
    monkeypatch.setattr(FR, "RESULTS", tmp_path)
    ctx = D.Context(P.TABLE, "cub100", "mobilenetv2", "ROOT", tmp_path / "w", tmp_path / "c", 1, {})
    sw = FR._sweep(_args(tmp_path, "--budgets", "60", "--alphas", "0,0.25,0.5,0.75,1", "--seeds", "1"), ctx)
    lines = FR.plan_lines(ctx, sw)
    scored = int(lines[0].split(" images scored per alpha")[0].rsplit(" ", 1)[1])
    want = 0.02 * images + 0.5 * 60 + 0.001 * scored * 4
    assert next(ln for ln in lines if ln.lstrip().startswith("dva 60 steps")).endswith(f"~{want / 60:.0f} min")
    assert any("measured frontier runs of this backbone: frozen 1, dva 2" in ln for ln in lines)


def test_plan_leaves_finished_runs_and_seeds_out(tmp_path, monkeypatch):
    monkeypatch.setattr(FR, "RESULTS", tmp_path)
    ctx = D.Context(P.TABLE, "cub100", "mobilenetv2", "ROOT", tmp_path / "w", tmp_path / "c", 1, {})
    sw = FR._sweep(_args(tmp_path), ctx)
    lines = FR.plan_lines(ctx, sw)
    assert not any(ln.endswith("[done]") for ln in lines) and any(ln.lstrip().startswith("then 1 more seed") for ln in lines)
    tags = [t for ln in lines for t in ln.split() if t.startswith(("frozen_", "dva_b10_"))]
    for t in tags:  # the frozen run and DVA's 10-step run finished
        (tmp_path / "w" / t).mkdir(parents=True)
        (tmp_path / "w" / t / "result.json").write_text('{"wall_seconds": 1.0}')
    lines = FR.plan_lines(ctx, sw)
    assert len(tags) == 2 and sum(ln.endswith("[done]") for ln in lines) == 2
    assert any("2 run(s) done, not counted" in ln for ln in lines)
    lines = FR.plan_lines(ctx, sw, {"complete": True, "json": "f.json"})
    assert lines[-1] == "  the recommended points' seeds: done (f.json is complete)"


def test_runtime_speed_times_both_runtimes_on_the_same_networks(tmp_path, capsys):
    """The benchmark behind frontier.yaml's runtime: torch and onnxruntime on the same three networks agree."""
    pytest.importorskip("onnxruntime")
    from benchmarks.frontier import runtime_speed as RS

    out = tmp_path / "speed.json"
    assert RS.main(["--backbones", "mobilenetv2", "--batch", "4", "--repeats", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    r = res["backbones"]["mobilenetv2"]
    assert r["split"] == 5 and r["img_size"] == 224 and set(r["networks"]) == {"prefix", "suffix", "whole"}
    for n in r["networks"].values():
        assert n["torch_s"] > 0 and n["onnx_s"] > 0 and n["ratio"] == pytest.approx(n["torch_s"] / n["onnx_s"])
        assert n["max_abs_diff"] < 1e-4
    assert "machine" in res and "command" in res and "| mobilenetv2 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        RS.main(["--backbones", "resnet50", "--out", str(out)])


# ----------------------------------------------------------------------------- design variants
def test_variants_resolve_per_pair_and_skip_what_dva_already_is(tmp_path):
    """frontier.yaml's variants are not in the profile; each resolves its overrides for the pair's chosen
    tokens (the deeper one: one stage more than the chosen placement), and a variant that trains exactly
    DVA's settings on a pair (the select profile chose its value) is DVA itself."""
    fr, t = F.FRONTIER, P.TABLE
    assert set(fr.variants) == {"dva_beta1", "dva_deeper"} and not set(fr.variants) & set(fr.methods)
    assert not any(m.variant for m in fr.methods.values()) and all(m.variant for m in fr.variants.values())
    base = F.common(t, "cub100", "mobilenetv2", "ROOT", tmp_path, 2)
    chosen = F.load_chosen(t, "cub100", "mobilenetv2", _select_json(tmp_path / "sel.json"))  # '-2:', beta 2
    assert fr.variants["dva_beta1"].resolve("vit_s14", chosen).extra == ("--loss.beta", "1")
    deeper = fr.variants["dva_deeper"]
    assert deeper.resolve("mobilenetv2", chosen).extra == ("--ica.blocks", "'-3:'")
    three = {**chosen, "adapters": [*chosen["adapters"][:5], "'-3:'", *chosen["adapters"][6:]]}
    assert deeper.resolve("lite2", three).extra == ("--ica.blocks", "'-4:'")
    every = {**chosen, "adapters": [*chosen["adapters"][:5], "all", *chosen["adapters"][6:]]}
    assert deeper.resolve("mobilenetv2", every) is None and deeper.applies_to("vit_s14")  # no stage to add
    assert fr.methods["dva"].resolve("mobilenetv2", every) is fr.methods["dva"]
    spec = F.method_run(t, "cub100", "mobilenetv2", base, chosen, deeper.resolve("mobilenetv2", chosen), 184, 0)
    assert F.effective(spec.overrides)["--ica.blocks"] == "'-3:'" and F.effective(spec.overrides)["--ica.rank"] == "8"
    assert not F.same_as_row(t, "cub100", "mobilenetv2", base, chosen, deeper.resolve("mobilenetv2", chosen), 184)
    beta1 = fr.variants["dva_beta1"].resolve("mobilenetv2", chosen)
    assert not F.same_as_row(t, "cub100", "mobilenetv2", base, chosen, beta1, 184)
    assert F.same_as_row(t, "cub100", "mobilenetv2", base, {**chosen, "opa": ["--loss.beta", "1"]}, beta1, 184)
    assert F.effective(["--a", "1", "--b", "x", "--a", "2"]) == {"--a": "2", "--b": "x"}
    # per-backbone overrides: a backbone without an entry does not run the variant
    per = deeper._replace(more_stages=0, per_backbone=(("lite2", ("--ica.rank", "2")),))
    assert per.resolve("lite2", chosen).extra == ("--ica.rank", "2") and per.resolve("mobilenetv2", chosen) is None


def test_a_variant_sitting_joins_a_complete_profile_and_keeps_it_complete(tmp_path, fake):
    """Variants run by name after the profile: their points join the JSON and the words (against the full
    fine-tune and DVA), nothing else is trained again, the other methods' seeds stay, the JSON stays complete."""
    whole = _profile(tmp_path)
    assert whole["complete"]
    n = len(fake())
    res = _profile(tmp_path, "--methods", "dva_beta1", "--seeds", "1")
    ran = [c[0] for c in fake()[n:]]
    assert len(ran) == 2 and all(r.startswith("dva_beta1_b") for r in ran)  # its two budgets, nothing else
    assert res["complete"] and res["recommended"]["dva"] == whole["recommended"]["dva"]
    assert [r for r in res["runs"] if r["method"] != "dva_beta1"] == whole["runs"]  # seeds kept as they were
    assert res["settings"]["methods"]["dva_beta1"] == {"label": "DVA, DPT weight 1", "row": "dva",
                                                       "dial": "ica_scale", "extra": ["--loss.beta", "1"],
                                                       "variant": True}
    assert R.design_changes(res) == ["dva_beta1"]
    sm = R.summary(res)
    assert set(sm["pairs"]) == {"dva_beta1_vs_full", "dva_beta1_vs_dva"}
    text = R.render_section([res])
    assert "- DVA, DPT weight 1 against full fine-tune (WiSE-FT), at equal ID R@1" in text
    assert "- DVA, DPT weight 1 against DVA, at equal ID R@1" in text
    # what validation says of the design change against DVA (their chosen points' validation MAP@R, seed 0)
    rv, rd = res["recommended"]["dva_beta1"]["val_map"], res["recommended"]["dva"]["val_map"]
    want = (f"- On the validation classes (the test split takes no part), MAP@R of each validation-chosen point "
            f"(seed 0): DVA {rd:.1f}; DVA, DPT weight 1 {rv:.1f} ({rv - rd:+.1f}); ")
    assert want in text and R.validation_words(res).startswith(want)
    lower = json.loads(json.dumps(res))
    lower["recommended"]["dva_beta1"]["val_map"] = rd - 2.0
    assert R.validation_words(lower).endswith("(-2.0); highest: DVA.")
    lower["recommended"]["dva_beta1"]["val_map"] = rd + 0.5
    assert R.validation_words(lower).endswith("(+0.5); highest: DVA, DPT weight 1.")
    lower["recommended"]["dva_beta1"]["val_map"] = rd + 0.01  # equal as printed
    assert R.validation_words(lower).endswith("(0.0); a tie at the top (DVA, DVA, DPT weight 1).")
    assert R.validation_words(whole) is None  # no design change in the profile alone
    # the variant's single seed is in its label; with every budget of it in, nothing it says is provisional
    assert "DVA, DPT weight 1 (20 steps, alpha 0.5; 1 seed)" in text and "provisional" not in text.lower()
    at20 = {**res, "settings": {**res["settings"], "targets": {**res["settings"]["targets"], "reference_budget": 20}}}
    line = next(ln for ln in R.render_section([at20]).splitlines()
                if ln.startswith("- The validation-chosen DVA, DPT weight 1 point"))
    assert "(not measured)" not in line and "provisional" not in line.lower()  # its verdict is final at one seed
    assert "- The validation-chosen DVA, DPT weight 1 point (" in text
    # and the next sitting of the profile keeps the variant's points
    again = _profile(tmp_path)
    assert {(q["method"], q["budget"]) for q in again["points"] if q["method"] == "dva_beta1"} == {
        ("dva_beta1", 10), ("dva_beta1", 20)} and again["complete"]


def test_plan_on_a_fresh_machine_counts_the_runs_its_json_holds(tmp_path, fake):
    """Every run folder gone (a fresh machine): the plan marks [done] what the JSON holds, as the sitting
    takes it back, and plans again a run the JSON scored at fewer alphas than asked."""
    _profile(tmp_path)
    ctx = D.Context(P.TABLE, "cub100", "mobilenetv2", "ROOT", tmp_path / "fresh", tmp_path / "cache", 1, {})
    sw = FR._sweep(_args(tmp_path), ctx)
    three = {k: v for k, v in sw.frontier.methods.items() if k in ("dva", "ica", "full")}
    sw = sw._replace(frontier=sw.frontier._replace(budgets=[10, 20], alphas=[0.0, 0.5, 1.0], seeds=2, methods=three))
    rows = [ln for ln in FR.plan(ctx, sw, tmp_path / "f.json") if "_s0_" in ln]
    assert len(rows) == 7 and all(ln.endswith("[done]") for ln in rows)  # frozen + 3 methods x 2 budgets
    fresh = D.Context(P.TABLE, "cub100", "mobilenetv2", "ROOT", tmp_path / "fresh2", tmp_path / "cache", 1, {})
    more = sw._replace(alphas=[0.0, 0.25, 0.5, 1.0])  # a sitting asking for an alpha the JSON's runs lack
    assert FR.earlier_runs(tmp_path / "f.json", fresh, more) == []  # other alphas: a sweep of other settings
    rows = [ln for ln in FR.plan_lines(fresh, more) if "_s0_" in ln]
    assert len(rows) == 7 and not any(ln.endswith("[done]") for ln in rows)
    assert not any("seeds: done" in ln for ln in FR.plan(fresh, more, tmp_path / "f.json"))  # not its sweep
    assert any("seeds: done" in ln for ln in FR.plan(ctx, sw, tmp_path / "f.json"))
    fresh.reused.update(FR.reuse_index([str(tmp_path / "f.json")]))  # --reuse of it: scored at fewer alphas
    rows = [ln for ln in FR.plan_lines(fresh, more) if "_s0_" in ln]
    assert sum(ln.endswith("[done]") for ln in rows) == 1  # the frozen run alone (alpha 0)


def test_a_variants_sitting_keeps_the_profile_complete_while_it_runs(tmp_path, fake, monkeypatch):
    """The JSON a variants sitting writes between its runs still says the profile is complete (a sitting cut
    short there leaves the profile's verdict as it was); its variant's points so far are in it."""
    assert _profile(tmp_path)["complete"]
    seen, run_point = [], FR.run_point

    def spy(ctx, spec, fr):
        if spec.name == "dva_beta1":
            seen.append(json.loads((tmp_path / "f.json").read_text()))
        return run_point(ctx, spec, fr)

    monkeypatch.setattr(FR, "run_point", spy)
    _profile(tmp_path, "--methods", "dva_beta1", "--seeds", "1")
    assert len(seen) == 2 and all(j["complete"] for j in seen)
    assert {q["budget"] for q in seen[1]["points"] if q["method"] == "dva_beta1"} == {10}


def test_a_variant_that_is_dva_itself_is_skipped(tmp_path, fake, capsys):
    """dva_beta1 on a pair whose select profile chose the DPT weight 1 trains nothing; dva_deeper where every
    stage is adapted already has nothing to add."""
    sel = tmp_path / "sel1.json"
    _select_json(sel)
    d = json.loads(sel.read_text())
    d["chosen_tokens"]["opa"] = ["--loss.beta", "1"]
    sel.write_text(json.dumps(d))
    ctx = D.Context(P.TABLE, "cub100", "mobilenetv2", "ROOT", tmp_path / "w", tmp_path / "cache", 1, {})
    with pytest.raises(ValueError, match="every variant named is DVA itself"):
        FR._sweep(_args(tmp_path, "--select", str(sel), "--methods", "dva_beta1"), ctx)
    sw = FR._sweep(_args(tmp_path, "--select", str(sel), "--methods", "dva,dva_beta1,dva_deeper"), ctx)
    assert [m.name for m in sw.methods] == ["dva", "dva_deeper"]
    assert sw.methods[1].extra == ("--ica.blocks", "'-3:'")
    assert "dva_beta1: on cub100 x mobilenetv2 it trains exactly what dva does" in capsys.readouterr().out
    d["chosen_tokens"]["adapters"][5] = "all"
    sel.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"\['dva_deeper'\] have nothing for mobilenetv2 with the chosen "
                                         r"placement all"):
        FR._sweep(_args(tmp_path, "--select", str(sel), "--methods", "dva_deeper"), ctx)


def test_a_finished_run_in_the_json_is_not_trained_again_on_a_fresh_machine(tmp_path, fake):
    """The run folders lost (another machine), the JSON kept: the seeds and the sweep come from the JSON."""
    whole = _profile(tmp_path)
    n = len(fake())
    again = _profile(tmp_path, work="fresh")
    ran = [c[0] for c in fake()[n:]]
    assert ran == [] or all(r.startswith("frozen") for r in ran)  # the frozen run is not in "runs"' reuse: cheap
    assert again["complete"] and again["points"] == whole["points"] and again["recommended"] == whole["recommended"]


def test_a_variant_of_some_budgets_is_provisional_and_a_narrow_sitting_keeps_the_seeds(tmp_path, fake):
    """A variant run at some budgets only: its comparisons say which points are missing. A later sitting of
    one method at one budget (--seeds 1) keeps that method's finished extra seeds: the JSON stays complete."""
    whole = _profile(tmp_path)
    part = _profile(tmp_path, "--methods", "dva_beta1", "--seeds", "1", "--budgets", "10")
    assert part["complete"] and not R.variant_swept(part, "dva_beta1") and R.variant_swept(part, "dva")
    pair = next(ln for ln in R.render_section([part]).splitlines() if ln.startswith("- DVA, DPT weight 1 against DVA"))
    assert pair.endswith("(provisional: the variant's other budgets still to run).")
    # its one budget would cut the equal-compute horizon short: it joins that comparison once all are in
    assert all("dva_beta1" not in e["id_r1"] for e in R.summary(part)["equal_time"])
    assert any("dva_beta1" in e["id_r1"] for e in R.summary(_profile(tmp_path, "--methods", "dva_beta1", "--seeds",
                                                                     "1"))["equal_time"])
    narrow = _profile(tmp_path, "--methods", "dva", "--budgets", "20", "--seeds", "1")
    def seeds(r):
        return sorted((x["method"], x["seed"]) for x in r["runs"] if x["seed"] > 0)
    assert seeds(narrow) == seeds(whole) and narrow["complete"]
    assert narrow["recommended"]["dva"] == whole["recommended"]["dva"]


def test_a_variants_sitting_does_not_replace_a_profile_of_other_settings(tmp_path, fake):
    """Variants join the profile's JSON; where it swept other settings (here other alphas), they refuse
    rather than write a JSON of the variant alone over it."""
    _profile(tmp_path)
    with pytest.raises(ValueError, match="swept other settings .*alphas.*run the profile first"):
        _profile(tmp_path, "--methods", "dva_beta1", "--seeds", "1", "--alphas", "0,1")


def _timed(tmp_path, minutes, *extra, out="f.json"):
    """A --timed sitting on the JSON of :func:`_profile` (its frontier.yaml and alphas)."""
    ctx = D.Context(P.TABLE, "cub100", "mobilenetv2", "ROOT", tmp_path / "work", tmp_path / "cache", 1, {})
    args = FR.build_parser().parse_args(["--dataset", "cub100", "--select", str(_select_json(tmp_path / "sel.json")),
                                         "--alphas", "0,0.5,1", "--timed", minutes, *extra])
    sw = FR._sweep(args, ctx)
    three = {k: v for k, v in sw.frontier.methods.items() if k in ("dva", "ica", "full")}
    sw = sw._replace(frontier=sw.frontier._replace(budgets=[10, 20], alphas=[0.0, 0.5, 1.0], seeds=2, methods=three,
                                                   timed_methods=["dva", "ica", "full"], margin=1.05))
    return ctx, sw


def test_timed_runs_carry_the_equal_compute_curves_to_a_minute(tmp_path, fake):
    """--timed: a run of each method sized to each minute on its least seconds per step,
    scored at alpha 1; its point joins the time curve only, the JSON stays complete, and nothing runs twice."""
    res = _profile(tmp_path)
    n = len(fake())
    # fake seconds per step: dva 15, ica 18, full 24 -> the 20-step budgets end at 5, 6 and 8 min
    assert [res["step_seconds"][m]["min"] for m in ("dva", "ica", "full")] == [15.0, 18.0, 24.0]
    assert [e["id_r1"]["dva"] for e in res["summary"]["equal_time"] if e["minutes"] == 15.0] == [None]
    ctx, sw = _timed(tmp_path, "15,7")
    timed = FR.run_profile(ctx, sw, tmp_path / "f.json", ["--timed", "15,7"])
    calls = fake()[n:]
    # steps = ceil(minutes x 60 x 1.05 / least): at 7 dva ceil(29.4) = 30, ica ceil(24.5) = 25, full ceil(18.4) = 19
    # (its 20-step budget's 8 min pass 7, but a last model is not a validated run sized to the minute); at 15
    # dva 63, ica 53, full 40
    assert [(c[0].split("_s0_")[0], c[1]) for c in calls] == [  # (the frozen run: resumed from its folder)
        ("dva_b30", "1.0"), ("ica_b25", "1.0"), ("full_b19", "1.0"), ("dva_b63", "1.0"), ("ica_b53", "1.0"),
        ("full_b40", "1.0")]
    assert timed["timed_plan"]["dva@7"] == {"method": "dva", "minutes": 7.0, "s_per_step": 15.0, "margin": 1.05,
                                            "steps": 30, "select": F.timed_select(F.FRONTIER)}
    assert [(p["method"], p["budget"], p["alpha"], p["timed"]) for p in timed["timed_points"]] == [
        ("dva", 30, 1.0, 7.0), ("ica", 25, 1.0, 7.0), ("full", 19, 1.0, 7.0), ("dva", 63, 1.0, 15.0),
        ("ica", 53, 1.0, 15.0), ("full", 40, 1.0, 15.0)]
    assert timed["timed_points"][0]["train_minutes"] == pytest.approx(30 * 15 / 60)
    # the sweep's points, the choice and completeness are untouched
    assert timed["points"] == res["points"] and timed["recommended"] == res["recommended"] and timed["complete"]
    at15 = next(e for e in timed["summary"]["equal_time"] if e["minutes"] == 15.0)
    # at a minute, each method's run sized to it (not the curve's interpolation): the fake's R@1 at 63 steps
    assert at15["id_r1"]["dva"] == pytest.approx(100 * (0.5 + 0.2 + 0.002 * 63))
    assert at15["source"] == {"dva": "timed", "ica": "timed", "full": "timed"}
    assert at15["ahead"] == "full"  # the fake's full fine-tune: +10 ID R@1 at every budget
    words = R.render_section([timed])
    assert "runs sized to a comparison minute" in words and "30 steps for 7 min" in words
    assert "| 63 (timed, 15 min; validation's best at step 63 = 15.8 min) |" in words
    assert "at 15 min: full fine-tune (WiSE-FT) ahead" in words
    assert ("Each evaluates on the validation classes every 1 epoch and is scored with the model of its best "
            f"validation MAP@R, stopped after {F.FRONTIER.timed_patience} evaluations without a better one") in words
    # again: all done, nothing runs; a profile sitting afterwards keeps the timed runs
    m = len(fake())
    FR.run_profile(ctx, sw, tmp_path / "f.json", ["--timed", "15,7"])
    assert len(fake()) == m
    again = _profile(tmp_path)
    assert len(fake()) == m and again["timed_points"] == timed["timed_points"] and again["complete"]


def test_a_timed_run_keeps_its_planned_steps_and_needs_the_profile(tmp_path, fake, monkeypatch):
    ctx, sw = _timed(tmp_path, "7")
    with pytest.raises(ValueError, match="run the profile first"):
        FR.run_profile(ctx, sw, tmp_path / "f.json", [])
    assert "run the profile first" in FR.plan(ctx, sw, tmp_path / "f.json")[0]
    _profile(tmp_path)
    lines = FR.plan(ctx, sw, tmp_path / "f.json")
    assert any("dva 7 min (30 steps, alpha 1)" in ln for ln in lines) and "timed runs to 7 min" in lines[0]
    assert any("full 7 min (19 steps, alpha 1)" in ln for ln in lines)
    monkeypatch.setenv("FAKE_FAIL", "dva_b30")  # the sitting is cut short in its first timed run
    with pytest.raises(RuntimeError):
        FR.run_profile(ctx, sw, tmp_path / "f.json", [])
    res = json.loads((tmp_path / "f.json").read_text())
    assert res["timed_plan"]["dva@7"]["steps"] == 30 and not res["timed_points"] and res["complete"]
    # the plan is kept: the next sitting runs the planned steps even if the least moved since
    res["timed_plan"]["dva@7"]["steps"] = 33
    (tmp_path / "f.json").write_text(json.dumps(res))
    monkeypatch.delenv("FAKE_FAIL")
    n = len(fake())
    FR.run_profile(ctx, sw, tmp_path / "f.json", [])
    assert [c[0].split("_s0_")[0] for c in fake()[n:]] == ["dva_b33", "ica_b25", "full_b19"]
    with pytest.raises(ValueError, match="--budgets does not apply"):
        _timed(tmp_path, "7", "--budgets", "10")
    with pytest.raises(ValueError, match="positive"):
        _timed(tmp_path, "0")


def test_a_timed_run_that_fell_short_of_its_minute_is_planned_again(tmp_path, fake, monkeypatch):
    """A timed run that lowers its method's least seconds per step can land short of its minute: it stays on the
    curve, the next sitting sizes a longer one on the new least; a plan of a method whose settings changed is void."""
    _profile(tmp_path)
    ctx, sw = _timed(tmp_path, "15", "--methods", "dva")
    monkeypatch.setenv("FAKE_FAST", "dva_b63")  # this run trains at 12 s/step, not 15
    first = FR.run_profile(ctx, sw, tmp_path / "f.json", [])
    assert first["step_seconds"]["dva"]["min"] == pytest.approx(12.0)
    assert first["timed_points"][0]["train_minutes"] == pytest.approx(63 * 12 / 60)  # 12.6 < 15
    assert next(e for e in first["summary"]["equal_time"] if e["minutes"] == 15.0)["id_r1"]["dva"] is None
    monkeypatch.delenv("FAKE_FAST")
    n = len(fake())
    said = []
    assert [(m.name, st) for m, _, st, _ in FR.timed_runs(ctx, sw, [], first, dict(first["timed_plan"]), said.append)
            ] == [("dva", 79)]  # ceil(15 x 60 x 1.05 / 12)
    assert "fell short of 15 min" in said[0]
    again = FR.run_profile(ctx, sw, tmp_path / "f.json", [])
    assert [c[0].split("_s0_")[0] for c in fake()[n:]] == ["dva_b79"]
    assert [p["budget"] for p in again["timed_points"]] == [63, 79] and again["timed_plan"]["dva@15"]["steps"] == 79
    at15 = next(e for e in again["summary"]["equal_time"] if e["minutes"] == 15.0)
    assert at15["id_r1"]["dva"] is not None
    FR.run_profile(ctx, sw, tmp_path / "f.json", [])
    assert len(fake()) == n + 1  # reached: nothing more
    # a plan made for other settings of the method is dropped with its runs
    res = json.loads((tmp_path / "f.json").read_text())
    res["settings"]["methods"]["dva"]["label"] = "DVA (older)"
    res["timed_plan"]["dva@45"] = {**res["timed_plan"]["dva@15"], "minutes": 45.0, "steps": 5}
    (tmp_path / "f.json").write_text(json.dumps(res))
    ctx, sw = _timed(tmp_path, "45", "--methods", "ica")
    assert "dva@45" not in FR.run_profile(ctx, sw, tmp_path / "f.json", [])["timed_plan"]


def test_a_timed_run_its_validation_stopped_holds_its_best_to_its_minute(tmp_path, fake, monkeypatch):
    """A timed run is scored with its validation's best model; one stopped early stays at that model from its
    last step up to its minute (reached: not planned again), said in the table and the words. A change of
    frontier.yaml's timed_select drops the timed runs and plans of the other validation."""
    _profile(tmp_path)
    ctx, sw = _timed(tmp_path, "15", "--methods", "dva")
    monkeypatch.setenv("FAKE_STOP", "dva_b63")  # stops at step 31, its best at 15
    res = FR.run_profile(ctx, sw, tmp_path / "f.json", [])
    p, = res["timed_points"]
    assert (p["budget"], p["steps"], p["model_step"], p["stopped_early"]) == (63, 31, 15, True)
    assert p["train_minutes"] == pytest.approx(31 * 15 / 60) and p["id_r1"] == pytest.approx(100 * (0.7 + 0.002 * 15))
    pts = R.time_points(res)
    assert A.time_curve(pts, "dva")[-2:] == [(pytest.approx(7.75), p["id_r1"]), (15.0, p["id_r1"])]
    assert A.reaches(pts, "dva", 15) and not A.reaches(pts, "dva", 15.5)
    at15 = next(e for e in res["summary"]["equal_time"] if e["minutes"] == 15.0)
    assert at15["id_r1"]["dva"] == pytest.approx(p["id_r1"])
    n = len(fake())
    FR.run_profile(ctx, sw, tmp_path / "f.json", [])
    assert len(fake()) == n  # its minute is reached: nothing planned again
    words = R.render_section([res])
    assert "| 63 (timed, 15 min; validation's best at step 15 = 3.8 min, stopped early at 31) |" in words
    assert "one stopped early holds that model up to its minute" in words
    assert "DVA 63 steps for 15 min (7.8 min on the clock, validation's best at step 15 = 3.8 min, stopped early at 31)" in words
    # another validation (patience 2): the earlier timed run and its plan are dropped, the minute run again
    sw = sw._replace(frontier=sw.frontier._replace(timed_patience=2))
    monkeypatch.delenv("FAKE_STOP")
    again = FR.run_profile(ctx, sw, tmp_path / "f.json", [])
    assert [c[0].split("_s0_")[0] for c in fake()[n:]] == ["dva_b63"]
    q, = again["timed_points"]
    assert not q["stopped_early"] and q["model_step"] == 63 and q["folder"] != p["folder"]
    assert again["timed_plan"]["dva@15"]["select"] == {"eval_every": 1, "patience": 2}
    assert [r["timed"]["select"]["patience"] for r in again["runs"] if r.get("timed")] == [2]


def test_a_timed_run_the_collapse_guard_stopped_holds_its_best_to_its_minute(tmp_path, fake, monkeypatch):
    """Stopped by the collapse guard (status stopped, no early_stop), a timed run is not planned again at the
    same steps forever: it holds its best model to its minute, labelled so."""
    _profile(tmp_path)
    ctx, sw = _timed(tmp_path, "15", "--methods", "dva")
    monkeypatch.setenv("FAKE_GUARD", "dva_b63")
    res = FR.run_profile(ctx, sw, tmp_path / "f.json", [])
    p, = res["timed_points"]
    assert (p["steps"], p["model_step"], p["stopped_early"], p["stop"]) == (31, 15, True, "collapse guard")
    assert A.reaches(R.time_points(res), "dva", 15)
    assert "| 63 (timed, 15 min; validation's best at step 15 = 3.8 min, stopped by the collapse guard at 31) |" in \
        R.render_section([res])


def test_the_equal_time_horizon_is_the_sweeps_and_a_minute_takes_the_run_sized_to_it():
    """The horizon ("the longest every method trained") comes from the sweep's last models alone, not from a
    timed run or its held best model; at a comparison minute a method's run sized to it answers, else its curve."""
    pts = [{"method": "frozen", "frozen": True, "alpha": 0.0, "id_r1": 40.0, "train_minutes": 0.0},
           {"method": "dva", "frozen": False, "alpha": 1.0, "id_r1": 50.0, "train_minutes": 4.0},
           {"method": "ica", "frozen": False, "alpha": 1.0, "id_r1": 48.0, "train_minutes": 1.0},
           {"method": "ica", "frozen": False, "alpha": 1.0, "id_r1": 55.0, "train_minutes": 2.0, "timed": 5.0,
            "stopped_early": True}]
    hz, at5 = A.equal_time(pts, ["dva", "ica"], [5.0])
    assert hz["horizon"] and hz["minutes"] == 1.0 and hz["id_r1"] == {"dva": 42.5, "ica": 48.0}
    assert at5["id_r1"] == {"dva": None, "ica": 55.0} and at5["source"] == {"dva": None, "ica": "timed"}
    assert A.time_curve(pts, "ica") == [(0.0, 40.0), (1.0, 48.0), (2.0, 55.0), (5.0, 55.0)]
    assert A.time_curve(pts, "ica", hold=False) == [(0.0, 40.0), (1.0, 48.0), (2.0, 55.0)]
    assert A.reaches(pts, "ica", 5.0 + 1e-9) and not A.reaches(pts, "ica", 4.0)


def test_a_timed_run_stopped_before_any_validation_says_why():
    summary = {"status": "stopped", "steps": 3, "checkpoint": "last.safetensors", "eval_split": "val",
               "checkpoints": {"best": None}, "collapse": {"step": 3, "kind": "nonfinite_loss",
                                                           "message": "the loss is nan", "fix": "--train.lr 1e-4"}}
    with pytest.raises(RuntimeError, match=r"collapse guard stopped the run at step 3 .*the loss is nan.*"
                                           r"Fix: --train.lr 1e-4"):
        W.scored_model(summary, "best")


def test_timed_steps_and_reaches():
    assert A.timed_steps(15, 0.47, 1.05) == 2011 and A.timed_steps(1, 120.0) == 1
    with pytest.raises(ValueError):
        A.timed_steps(5, 0.0)
    pts = [{"method": "frozen", "frozen": True, "alpha": 0.0, "id_r1": 40.0, "train_minutes": 0.0},
           {"method": "dva", "frozen": False, "alpha": 1.0, "id_r1": 50.0, "train_minutes": 9.0},
           {"method": "dva", "frozen": False, "alpha": 1.0, "id_r1": 52.0, "train_minutes": 5.5, "timed": 5.0},
           {"method": "dva", "frozen": False, "alpha": 1.0, "id_r1": 51.0, "train_minutes": 14.0, "timed": 15.0},
           {"method": "dva", "frozen": False, "alpha": 1.0, "id_r1": 53.0, "train_minutes": 10.0, "timed": 45.0,
            "stopped_early": True}]
    # the sweep's budget passing 5 min does not count; the 15-min run fell short (14 min, not stopped); the
    # 45-min run stopped early at 10 min holds its minute, not the 15 it passed
    assert A.reaches(pts, "dva", 5) and not A.reaches(pts, "dva", 15) and A.reaches(pts, "dva", 45)
    assert not A.reaches(pts, "dva", 7) and not A.reaches(pts, "ica", 1)
    assert A.timed_point(pts, "dva", 45.0)["id_r1"] == 53.0
    assert A.time_curve(pts, "dva")[-1] == (45.0, 53.0)  # held flat from 10 min to its own minute
