"""``dva interpolate``: a checkpoint between the frozen backbone and a trained one (see dva.checkpoint.interpolate).

Full and head fine-tunes are interpolated in weight space (WiSE-FT):
``w = (1 - A) * w_frozen + A * w_tuned``. For an adapter checkpoint the same dial is the adapter
scale: the adapters are kept and the checkpoint records ``ica.alpha`` (what ``--ica-scale A``
does at load time). The result loads in ``dva eval``/``embed``/``search`` like any checkpoint;
its model fingerprint differs with A, so indexes of different A never mix.
"""
from __future__ import annotations

import argparse

from dva_cli._output import add_overwrite_argument, refuse_existing

NAME = "interpolate"
HELP = "Write a checkpoint between the frozen backbone (alpha 0) and a trained checkpoint (alpha 1): WiSE-FT."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a checkpoint from `dva train` (full, head or adapters)")
    p.add_argument("--alpha", type=float, required=True,
                   help="0 = the frozen backbone, 1 = the checkpoint's model, 0.5 = the midpoint; refused "
                        "outside [0, 1] unless --extrapolate")
    p.add_argument("--extrapolate", action="store_true",
                   help="allow --alpha outside [0, 1] (e.g. 1.2: past the trained weights)")
    p.add_argument("--weights", default=None,
                   help="where the frozen backbone weights come from (default: the checkpoint's own); "
                        "they must be the ones it was trained on")
    p.add_argument("--out", required=True, help="the .safetensors checkpoint to write (atomically)")
    add_overwrite_argument(p, "the --out file")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    import json

    from dva.checkpoint import check_alpha, interpolate
    from dva.runtime.load import load_embedder

    check_alpha(args.alpha, args.extrapolate, "--alpha")  # before a backbone is built
    refuse_existing(args.out, args.overwrite)
    info = interpolate(args.checkpoint, args.alpha, args.out, extrapolate=args.extrapolate, weights=args.weights)
    # Loading what was written checks it and gives the fingerprint an index built with it will carry.
    embedder = load_embedder(checkpoint=args.out, weights=args.weights, runtime="torch")
    info = {"checkpoint": args.checkpoint, "out": args.out, **info, "fingerprint": embedder.fingerprint}
    if args.json:
        print(json.dumps(info))
        return 0
    how = (f"adapter scale ica.alpha={info['ica_alpha']:g}" if info["ica_alpha"] is not None else
           f"{info['mixed_tensors']} {info['mode']} tensors mixed (1 - {info['alpha']:g}) * frozen + "
           f"{info['alpha']:g} * tuned")
    print(f"wrote {args.out}: alpha {info['alpha']:g} of {args.checkpoint} ({how}), model {info['fingerprint']}")
    return 0
