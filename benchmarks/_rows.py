"""One training/evaluation run of a benchmark row inside a worker process.

A harness (``benchmarks.cub100.run``, ``benchmarks.datasets.run``) runs every row in a worker
subprocess of its own (:func:`benchmarks._runner.run_in_folder`); the worker reads the run's
``spec.json`` (:func:`open_spec`), runs the row here (:func:`frozen_row` or :func:`trained_row`)
and writes ``result.json`` (:func:`write_result`). The runner shares one OPA boxes file per
:func:`boxes_key` between the runs of a cache folder.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from benchmarks import _common as C


def open_spec(spec_path: str | Path) -> tuple[dict[str, Any], Path, Any]:
    """A worker's start: its spec, its run folder (made) and config (``demo`` + the spec's overrides).

    Sets torch's thread count to the spec's ``threads`` first.
    """
    import torch

    from dva.config import load_config

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(spec["threads"]))
    return spec, out, load_config("demo", spec["overrides"] + ["--output_dir", str(out)])


def write_result(out: Path, res: dict[str, Any]) -> int:
    """``out/result.json`` of a worker run (numpy scalars as numbers, anything else odd as text); exit status 0."""
    import numpy as np

    res = json.loads(json.dumps(res, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
    C.write_json(out / "result.json", res)
    return 0


def fast(embedder: Any, onnx_path: Path) -> tuple[Any, str]:
    """The onnxruntime twin of a torch embedder when onnxruntime is installed (`dva embed`'s
    default: same vectors to cosine 0.99999, 4-7x faster on the CPU), exported once to ``onnx_path``;
    with the name of the runtime."""
    from dva.runtime.load import onnx_embedder_for
    from dva.runtime.sessions import onnx_available

    return (onnx_embedder_for(embedder, onnx_path), "onnxruntime") if onnx_available() else (embedder, "torch")


def frozen_model(cfg: Any) -> Any:
    """The backbone alone, in eval mode: no adapters, nothing trainable (``cfg`` is changed so)."""
    from dva.model import build_model

    cfg.ica.enabled = False
    cfg.train.trainable = "none"
    return build_model(cfg, 0).eval()


def frozen_row(cfg: Any, data: Any, n: int, out: Path, res: dict[str, Any]) -> tuple[Any, Any]:
    """The backbone alone (no adapters, no head): embed, time and (all images) score; fills ``res``.

    With ``n`` = -1 the whole evaluation set is embedded and scored; otherwise only the speed is
    measured on the first ``n`` images and the metrics come from the ``frozen_metrics`` of a trained
    row (same images, adapters off: ``benchmarks.cub100.run.fill_frozen_metrics``).

    Returns:
        The torch embedder and the one that was timed.
    """
    from dva.metrics import retrieval_metrics
    from dva.model import count_parameters
    from dva.runtime.torch_embedder import Embedder

    model = frozen_model(cfg)
    emb = Embedder(model)
    paths = data.eval_paths if n < 0 else data.eval_paths[:max(n, 1)]
    # Metrics through the torch embedder (as the trained rows' evaluations); speed only: `dva embed`'s runtime.
    timed, res["embed_runtime"] = (emb, "torch") if n < 0 else fast(emb, out / "model.onnx")
    t0 = time.time()
    e = timed.embed_paths(paths, batch_size=cfg.train.batch_size_eval, progress=False)
    dt = time.time() - t0
    res.update(params=count_parameters(model), train_seconds=0.0, train_img_per_s=None, steps=0,
               embed_images=len(e), embed_img_per_s=len(e) / dt, eval_split=data.eval_name,
               metrics=retrieval_metrics(e, data.eval_labels) if len(paths) == len(data.eval_paths) else None)
    return emb, timed


def train_row(cfg: Any) -> dict[str, Any]:
    """Train a row in ``cfg.output_dir``, continuing an interrupted training of it; returns the summary.

    The runner never lets a folder hold a run of other settings, so a ``train_state.pt`` there is this
    row's own, cut off by a crash or the end of a sitting: a long row (a full fine-tune at 1,472
    steps, the longer budgets) continues where it stopped instead of starting over. A state the
    trainer refuses to resume (its config changed with the code) is trained afresh, said in the log.
    """
    from dva_train.state import STATE_FILE
    from dva_train.train import train

    if (Path(cfg.output_dir) / STATE_FILE).is_file():
        try:
            summary = train(cfg, resume=True, progress=False)
            summary["resumed"] = True
            return summary
        except ValueError as exc:
            print(f"not resumed ({exc}); training afresh", flush=True)
    return train(cfg, progress=False, overwrite=True)


def trained_row(cfg: Any, data: Any, n: int, out: Path, res: dict[str, Any]) -> tuple[Any, Any]:
    """Train, then time (``n`` > 0) or re-score (``n`` < 0) the saved model as a user loads it; fills ``res``.

    Returns:
        The torch embedder of the saved model and the one that was timed (itself when none was).
    """
    from dva.checkpoint import load_checkpoint
    from dva.metrics import retrieval_metrics
    from dva.runtime.torch_embedder import Embedder

    t0 = time.time()
    summary = train_row(cfg)  # a row re-run (no result.json) continues its interrupted training
    res.update(summary)
    res["wall_seconds_train"] = time.time() - t0
    emb = Embedder(load_checkpoint(summary["checkpoint"])[0])  # the saved model, as a user loads it
    timed = emb
    if n > 0:  # speed only: through `dva embed`'s default runtime (the export, a one-off, not timed)
        timed, res["embed_runtime"] = fast(emb, out / "model.onnx")
        t0 = time.time()
        e = timed.embed_paths(data.eval_paths[:n], batch_size=cfg.train.batch_size_eval, progress=False)
        res["embed_images"] = len(e)
        res["embed_img_per_s"] = len(e) / (time.time() - t0)
    elif n < 0:  # the whole evaluation set: re-check the metrics through the torch embedder
        t0 = time.time()
        e = emb.embed_paths(data.eval_paths, batch_size=cfg.train.batch_size_eval, progress=False)
        res.update(embed_images=len(e), embed_img_per_s=len(e) / (time.time() - t0), embed_runtime="torch",
                   metrics_embedder=retrieval_metrics(e, data.eval_labels))
    return emb, timed


def boxes_key(overrides: list[str]) -> str:
    """The name of a run's shared OPA boxes file: one per dataset, box source, backbone, size and split."""
    from dva.config import load_config

    cfg = load_config("demo", overrides)
    return (f"boxes_{cfg.data.dataset}_{cfg.opa.box_source}_{cfg.backbone.name}_{cfg.backbone.img_size}_"
            f"{cfg.opa.threshold}_{cfg.opa.loc_scale}_{cfg.data.val_classes}.json")
