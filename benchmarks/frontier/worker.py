"""One frontier run inside the datasets harness's worker process (its spec's ``frontier`` section).

``benchmarks.datasets.run``'s worker hands a spec with a ``frontier`` section to :func:`run_frontier`:

1. train (kind ``train``) on the training classes less the validation classes, the test split
   withheld from the trainer (it never opens a test image), the fixed budget, the last model kept (a
   timed run, ``model: best``: the model its periodic validation chose, ``best.safetensors``);
   a finished training in the run folder (``summary.json`` + ``last.safetensors``, same settings:
   the runner refuses a folder of others) is reused, so a process killed while scoring, or a run
   asked for more alphas, only scores;
2. score the saved model at every alpha of the section on the validation classes, the ID test
   classes and each OOD gallery (:mod:`benchmarks.frontier.sweep`; an adapter model's frozen prefix
   read from the shared prefix cache when an earlier run of the same prefix stored it), writing
   ``scores.json`` after every set; kind ``frozen`` scores the frozen backbone (alpha 0 of every method) once.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import _common as C
from benchmarks import _rows
from benchmarks._rows import frozen_model
from benchmarks.frontier import sweep as S

SCORES_FILE = "scores.json"


def finished_training(out: Path) -> dict[str, Any] | None:
    """The summary of a training that finished in ``out`` (with its last checkpoint), else None."""
    from dva_train.state import LAST_FILE, SUMMARY_FILE

    if not ((out / SUMMARY_FILE).is_file() and (out / LAST_FILE).is_file()):
        return None
    summary = json.loads((out / SUMMARY_FILE).read_text())
    return summary if summary.get("status") in ("completed", "stopped") else None


def _train(cfg: Any, out: Path, withheld: Callable[[], Any]) -> tuple[dict[str, Any], bool]:
    """Train (test split withheld; an interrupted training continues) or reuse a finished one; returns the
    summary and whether it was reused."""
    summary = finished_training(out)
    if summary is not None:
        return summary, True
    with withheld():
        summary = _rows.train_row(cfg)
    return summary, False


def _training_record(summary: dict[str, Any], reused: bool) -> dict[str, Any]:
    """The run's training figures from its ``summary.json``; images = img/s x seconds (the trainer's count)."""
    keys = ("status", "steps", "train_seconds", "prep_seconds", "train_img_per_s", "params", "metrics",
            "eval_split", "checkpoint", "prefix_cache", "boxes", "batch", "findings", "early_stop", "eval_every", "data")
    rec = {k: summary.get(k) for k in keys}
    rec["trainer_budget"] = summary.get("budget")  # the trainer's {steps, rule}; "budget" is the sweep's steps
    rec["images_processed"] = round(float(summary.get("train_img_per_s") or 0.0) * float(summary.get("train_seconds")
                                                                                          or 0.0))
    rec["training_reused"] = reused
    return rec


def scored_model(summary: dict[str, Any], model: str, where: str = "summary.json") -> tuple[str, int]:
    """The checkpoint to score and its step: the last model, or (``best``) the one the run's periodic
    validation chose (``summary.json``'s ``checkpoints.best``; a run that never validated has none: an error
    naming ``where``, as scoring its last model in its place would mislabel it)."""
    if model == "last":
        return summary["checkpoint"], int(summary["steps"])
    best = (summary.get("checkpoints") or {}).get("best")
    if model == "best" and not best and summary.get("status") == "stopped":
        c = summary.get("collapse") or {}
        fix = c.get("fix") or "a lower learning rate"
        raise RuntimeError(f"{where}: the collapse guard stopped the run at step {c.get('step')} before its first validation "
                           f"({c.get('message') or c.get('kind')}): no model to score. Fix: {fix}; then delete the "
                           "run folder to train it again")
    if model != "best" or not best or summary.get("eval_split") != "val":
        raise RuntimeError(f"{where}: the frontier section asks for the {model!r} model; the run has "
                           + ("no validation-chosen one (its spec must set --train.eval_every > 0 and hold out "
                              "--data.val_classes)" if model == "best" else "only 'last' and 'best'"))
    return best["path"], int(best["step"])


def _dial(kind: str, dial: str, cfg: Any, checkpoint: str, alphas: list[float], tmp: Path,
          prefixes: Path | None = None, runtime: str = "torch", threads: int | None = None,
          graphs: Path | None = None) -> tuple[S.Dial, Any]:
    """The run's dial and the model ``embed_paths`` is timed with (its largest alpha); ``prefixes``: the
    folder of the frozen-prefix cache an adapter model reads and fills (:class:`sweep.PrefixCache`);
    ``runtime``/``threads``: what runs the networks, ``graphs``: where its ONNX graphs go (:class:`sweep.Dial`)."""
    from dva.checkpoint import interpolate, load_checkpoint

    if kind == "frozen":
        model = frozen_model(cfg)
        return S.ModelsDial({0.0: model}, runtime, threads, graphs), model
    if dial == "ica_scale":
        model = load_checkpoint(checkpoint)[0]
        return S.AdapterDial(model, S.PrefixCache(prefixes) if prefixes else None, runtime, threads, graphs), model
    models = {}
    for a in alphas:  # WiSE-FT: dva interpolate's mixing, each alpha a checkpoint loaded as a user would
        path = tmp / f"wise_{S.akey(a)}.safetensors"
        interpolate(checkpoint, a, path)
        models[a] = load_checkpoint(path)[0]
    return S.ModelsDial(models, runtime, threads, graphs), models[max(alphas)]


def clear_stale(out: Path) -> list[str]:
    """Remove the temporary folders a killed process of this run left in ``out`` (WiSE-FT checkpoints,
    ONNX graphs: hundreds of MB a run); their names."""
    stale = sorted(p for p in [*out.glob("wise_*"), *out.glob("onnx_*")] if p.is_dir())
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return [p.name for p in stale]


def image_sets(cfg: Any, galleries: list[dict[str, str]]) -> list[S.ImageSet]:
    """Validation classes, ID test classes and the OOD galleries (sorted by path), in scoring order."""
    from benchmarks.datasets.ood import Gallery, gallery_images
    from dva_train.train import prepare_data

    data = prepare_data(cfg)  # not withheld: eval = the validation classes, test = the test classes
    if data.eval_name != "val" or not data.test_paths:
        raise RuntimeError("a frontier run needs --data.val_classes > 0 and a test split")
    sets = [S.ImageSet("val", list(data.eval_paths), data.eval_labels),
            S.ImageSet("test", list(data.test_paths), data.test_labels)]
    return sets + [S.ImageSet(g["name"], *gallery_images(Gallery(**g))) for g in galleries]


def _score(dial: S.Dial, timed: Any, sets: list[S.ImageSet], alphas: list[float], done: dict[str, Any] | None,
           fr: dict[str, Any], cfg: Any, out: Path, threads: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every set at every alpha (what ``done`` lacks), and what the sweep cost against plain passes."""
    from dva.runtime.torch_embedder import Embedder

    emb = Embedder(timed)
    pre = S.split_transform(emb.transform)
    cache = S.ImageCache(pre, Path(fr["image_cache"]) if fr.get("image_cache") else None, threads)
    batch = int(cfg.train.batch_size_eval)
    # One plain embed_paths pass (decode + whole network) per image, timed on a sample of the test
    # images: what the sweep is compared with. A first, untimed pass warms both up (the first
    # batch of a process also builds the kernels' plans), as the sweep's first batch would be.
    sample = sets[1].paths[:int(fr.get("naive_sample", 64))]
    naive = None
    if sample:
        S.naive_seconds_per_image(emb, sample, batch)
        naive = S.naive_seconds_per_image(emb, sample, batch)
    stats = S.SweepStats()
    scores = S.score_sets(dial, sets, alphas, cache, batch, done, lambda sc: C.write_json(out / SCORES_FILE, sc),
                          stats)
    return scores, S.sweep_record(dial, cache, stats, naive)


def run_frontier(spec: dict[str, Any], cfg: Any, out: Path, withheld: Callable[[], Any]) -> dict[str, Any]:
    """Train (or not: ``frozen``) and score every alpha of ``spec["frontier"]``; the run's result.

    Args:
        spec: the run's ``spec.json`` (``kind``, ``name`` and the ``frontier`` section: ``method``,
            ``budget``, ``dial``, ``alphas``, ``ood`` galleries, ``image_cache`` and ``prefix_cache``
            folders or None, ``runtime``: torch, onnx or auto).
        cfg: the run's config (``demo`` + its overrides, ``output_dir`` = ``out``).
        out: the run folder.
        withheld: a context manager under which the trainer's split holds no test image.
    """
    fr = spec["frontier"]
    alphas = [float(a) for a in fr["alphas"]]
    res: dict[str, Any] = {"name": spec["name"], "method": fr["method"], "budget": fr["budget"],
                           "seed": cfg.train.seed, "kind": spec["kind"], "img_size": cfg.backbone.img_size,
                           "dataset": cfg.data.dataset, "folder": out.name, "dial": fr["dial"]}
    checkpoint = ""
    clear_stale(out)  # before anything else: a killed process's temporary folders
    if spec["kind"] == "train":
        summary, reused = _train(cfg, out, withheld)
        res.update(_training_record(summary, reused))
        checkpoint, res["model_step"] = scored_model(summary, fr.get("model", "last"), str(out / "summary.json"))
    else:
        res.update(steps=0, train_seconds=0.0, prep_seconds=0.0, images_processed=0, training_reused=False)
    sets = image_sets(cfg, fr.get("ood") or [])
    res["sets"] = {s.name: len(s.paths) for s in sets}
    prior = out / SCORES_FILE  # what an earlier process of this run scored (killed, or asked for fewer alphas)
    done = json.loads(prior.read_text()) if prior.is_file() else {}
    todo = [a for a in alphas if any(s.name not in done.get(S.akey(a), {}) for s in sets)]
    with tempfile.TemporaryDirectory(dir=out, prefix="wise_") as tmp:
        t0 = time.perf_counter()
        dial, timed = _dial(spec["kind"], fr["dial"], cfg, checkpoint, todo or alphas[-1:], Path(tmp),
                            Path(fr["prefix_cache"]) if fr.get("prefix_cache") else None,
                            fr.get("runtime", "torch"), int(spec["threads"]), out)
        res["load_seconds"] = time.perf_counter() - t0  # building the models (and the WiSE-FT checkpoints)
    if spec["kind"] == "frozen":
        from dva.model import count_parameters

        res["params"] = count_parameters(timed)
    try:
        scores, res["sweep"] = _score(dial, timed, sets, todo, done, fr, cfg, out, int(spec["threads"])) \
            if todo else (done, None)
    finally:
        dial.close()
    res["scores"] = {S.akey(a): scores[S.akey(a)] for a in alphas}
    if spec["kind"] == "frozen":
        res["metrics"] = res["scores"][S.akey(0.0)]["val"]
    return res
