"""``dva export``: write the embedding model (backbone + adapters) as an ONNX file (see dva.runtime.onnx_export)."""
from __future__ import annotations

import argparse

from dva_cli import _model  # module attribute lookup: stays patchable in tests
from dva_cli._output import add_overwrite_argument, refuse_existing

NAME = "export"
HELP = "Export backbone + adapters to ONNX (normalised images -> L2-normalised embeddings)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    _model.add_model_arguments(p, ica_scale=True)
    p.add_argument("--out", required=True, help="the .onnx file to write (atomically)")
    add_overwrite_argument(p, "the --out file")
    p.add_argument("--no-merge", action="store_true",
                   help="keep identity-activation adapters as separate branches (default: merged "
                        "into the frozen weights)")


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from dva.runtime.onnx_embedder import OnnxEmbedder
    from dva.runtime.onnx_export import export_onnx

    if args.device not in ("cpu", "auto"):
        raise ValueError("dva export runs on the CPU; leave out --device")
    refuse_existing(args.out, args.overwrite)  # before the model is loaded and traced
    args.device = "cpu"
    embedder = _model.embedder_from_args(args)  # torch: the reference the export is checked against
    meta = export_onnx(embedder, args.out, merge=not args.no_merge)
    onnx = OnnxEmbedder(args.out)
    x = torch.randn(2, 3, embedder.img_size, embedder.img_size, generator=torch.Generator().manual_seed(0))
    cos = float((embedder.embed_tensor(x) * onnx.embed_tensor(x)).sum(1).min())
    info = json.loads(meta["dva.model"])
    adapters = ("no adapters" if not info["adapters"] else
                f"{info['merged_adapters']} identity adapters merged" if info["merged_adapters"] else
                f"{info['adapter_act']} adapters")
    if info.get("ica_scale") not in (None, 1.0):
        adapters += f" at scale {info['ica_scale']:g}"
    print(f"wrote {args.out}: {info['backbone']} ({info['weights']} weights), {adapters}, dim {meta['dva.dim']}, "
          f"{meta['dva.img_size']} px, "
          f"model {meta['dva.fingerprint']}; onnxruntime vs torch on 2 random inputs: min cosine {cos:.7f}")
    return 0
