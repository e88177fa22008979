"""``dva train``: train DVA adapters from a YAML config with ``--section.key value`` overrides.

Ends with the frozen backbone and the trained model side by side, and says which checkpoint is
which. An OUTPUT_DIR that holds another run's checkpoints is refused unless ``--resume``
(continue it) or ``--overwrite`` (train again from scratch). Exit status: 0 trained; 2 a user
error (bad config, missing data, refused resume, an existing run);
3 stopped by the collapse guard (docs/METHOD.md, Training; ``--train.on_collapse warn`` goes on).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any

NAME = "train"
HELP = "train DVA (frozen backbone + ICA + OPA + DPT) on a dataset; resumable; runs under torchrun"
COLLAPSED = 3  # exit status of a run stopped by the collapse guard

_ROWS = (("recall@1", "R@1"), ("recall@2", "R@2"), ("recall@4", "R@4"), ("recall@8", "R@8"), ("map@r", "MAP@R"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    from dva.config import preset_figures, presets

    figures = preset_figures()

    def shown(name: str) -> str:
        f = figures.get(name)
        return "" if not f else ("\n  " + " " * 13 + "test R@1 frozen -> default command: "
                                 + ", ".join(f"{d} {a:.1f} -> {b:.1f}" for d, (a, b) in f.items()))

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = ("presets (--preset NAME, src/dva/configs/NAME.yaml; settings chosen on cub100 validation classes "
                "unless the line says otherwise; figures: README.md, docs/BENCHMARKS.md, the default command):\n"
                + "\n".join(f"  {name:<12} {line}{shown(name)}" for name, line in presets().items()))
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", help="YAML config (a file, or a packaged name: demo, cub200_vitb16, or a preset); "
                                      "omitted keys keep their defaults")
    src.add_argument("--preset", choices=sorted(presets()), metavar="NAME",
                     help="a packaged per-backbone preset for your own photos (listed below): --config NAME, with "
                          "data.dataset folder unless --data.dataset is given; e.g. --preset lite2 --data.root photos/")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUTPUT_DIR/train_state.pt (weights, optimiser, schedule, position) if present")
    p.add_argument("--resume-with-changes", action="store_true",
                   help="with --resume: continue even if the config, or the batch fitted to the split and the process "
                        "count, differs from the run's (the differences are logged)")
    p.add_argument("--overwrite", action="store_true",
                   help="train from scratch even if OUTPUT_DIR holds another run (its checkpoints, state and "
                        "summary are deleted; log.jsonl keeps its rows); default: refuse")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (none either when stderr is not a terminal); the log rows still print "
                        "and go to log.jsonl")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    # Any other --section.key value pair is a config override, e.g. --train.epochs 3 --ica.rank 8.
    p.set_defaults(overrides=[])


def comparison_table(frozen: dict[str, float] | None, trained: dict[str, float] | None, split: str = "test",
                     label: str = "trained") -> str:
    """Frozen backbone vs trained model (its column headed ``label``): Recall@1/2/4/8 and MAP@R in percent (as
    ``dva eval`` prints them), and the change in points."""
    if not trained:
        return ""
    cols = ["frozen", label, "change"] if frozen else [label]
    lines = [f"{split + ' split':<10}" + "".join(f"{c:>10}" for c in cols)]
    for key, name in _ROWS:
        if key not in trained:
            continue
        cells = [trained[key]] if not frozen else [frozen[key], trained[key]]
        row = "".join(f"{100 * v:>10.2f}" for v in cells)
        if frozen:
            row += f"{100 * (trained[key] - frozen[key]):>+10.2f}"
        lines.append(f"{name:<10}{row}")
    return "\n".join(lines)


def report(summary: dict[str, Any]) -> str:
    """What ``dva train`` prints at the end: the table, the checkpoints, the warnings."""
    split = summary.get("eval_split", "test")
    model = summary.get("test_model") or {}
    # A run that validated scores two models: the last (the validation table) and the one validation
    # chose (the test table). Their columns say which, and the chosen one's validation score is given.
    two = bool(summary.get("test_metrics")) and model.get("step") != summary.get("steps")
    out = [comparison_table(summary.get("frozen_metrics"), summary.get("metrics"), "val" if split == "val" else split,
                            f"last@{summary.get('steps')}" if two else "trained")]
    if summary.get("test_metrics"):  # a run that validated: the test split, scored once for the chosen model
        best = (summary.get("checkpoints") or {}).get("best") or {}
        on_val = (f", validation MAP@R {100 * best['map@r']:.2f}" if best.get("map@r") is not None
                  and best.get("step") == model.get("step") else "")
        out.append(comparison_table(summary.get("test_frozen_metrics"), summary["test_metrics"], "test",
                                    f"best@{model.get('step')}" if two else "trained")
                   + f"\n(test: the model validation chose, step {model.get('step')}{on_val}; scored once, "
                     "selects nothing)")
    if summary.get("early_stop"):
        out.append(summary["early_stop"])
    cps = summary.get("checkpoints") or {}
    last, best = cps.get("last"), cps.get("best")
    if last:
        out.append(f"trained = {last['path']}: {last['what']}, step {last['step']}")
    if best:
        out.append(f"best    = {best['path']}: step {best['step']}, MAP@R {100 * best['map@r']:.2f} on the "
                   f"{best['split']} split, {best['what']}")
    if summary.get("worse_than_frozen"):
        m = summary["metrics"]["map@r"]
        d = (f"MAP@R {100 * (m - summary['frozen_metrics']['map@r']):+.2f} points" if math.isfinite(m)
             else "its embeddings are not finite")
        ck = last["path"] if last else "CHECKPOINT"
        use = (f"use {best['path']}" if best and not m >= best["map@r"] else
               f"the frozen backbone serves as is: dva eval/embed --checkpoint {ck} --ica-scale 0 (an adapter run; "
               "0.5 blends the two), or dva interpolate --alpha for a head or full fine-tune; with few evaluation "
               "classes or images the difference may be noise")
        out.append(f"WARNING: the trained model is worse than the frozen backbone ({d}); {use}")
    if summary.get("collapse"):
        out.append(f"STOPPED: {summary['collapse']['message']}")
    elif summary.get("findings"):
        kinds = sorted({f["kind"] for f in summary["findings"]})
        out.append(f"WARNING: the collapse guard tripped {len(summary['findings'])} time(s) ({', '.join(kinds)}); "
                   "see log.jsonl (kind=collapse)")
    return "\n".join(x for x in out if x)


def _rank() -> int:
    """This process's rank under torchrun (0 alone)."""
    return int(os.environ.get("RANK", "0") or 0)


def interrupted_note(out: str, save_every: int, started: float = 0.0) -> str:
    """What an interrupted ``dva train`` left in ``out`` and how to go on from it; a state older than
    ``started`` (the time the command began) is an earlier run's, not this one's."""
    from pathlib import Path

    from dva_train.state import LAST_FILE, STATE_FILE, checkpoint_step

    every = f"every {save_every} steps and " if save_every else ""
    state = Path(out) / STATE_FILE
    if not state.is_file() or state.stat().st_mtime < started:
        return (f"dva train: interrupted before its first saved state ({every}at each epoch's end): run the same "
                "command again (with --overwrite if it refuses the folder) to start afresh")
    step = checkpoint_step(Path(out) / LAST_FILE)
    at = f" at step {step}" if step is not None else ""
    return (f"dva train: interrupted; the state saved{at} ({every}at each epoch's end) is in {out}: run the same "
            "command with --resume to continue from there")


def run(args: argparse.Namespace) -> int:
    import yaml

    from dva.config import load_config

    cfg = load_config(args.config or args.preset, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    from dva.data import ImageReadError
    from dva_train.train import train

    # With --overwrite, a state older than this command is the replaced run's (deleted once training
    # starts); with --resume, it is this run's own.
    started = time.time() if args.overwrite else 0.0
    try:
        # Bars only where a person watches (a terminal): in a log file each redraw would be a line.
        # The log rows print either way.
        summary = train(cfg, resume=args.resume or args.resume_with_changes,
                        progress=not args.no_progress and sys.stderr.isatty(),
                        allow_config_changes=args.resume_with_changes, overwrite=args.overwrite, echo=True)
    except KeyboardInterrupt:
        if _rank() == 0:
            print(interrupted_note(cfg.output_dir, cfg.train.save_every, started), file=sys.stderr)
        raise
    except ImageReadError as exc:  # list every unreadable file at once, not one per rerun
        if _rank() != 0:  # rank 0 lists them; the other ranks fail with their first
            raise
        import warnings

        from dva.data import load_split
        from dva_cli._data import all_unreadable, check_hint, split_paths

        d = cfg.data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the split's notes were said when training read it
            paths = split_paths(load_split(d.dataset, d.root, d.protocol))
        every = all_unreadable(paths, check_hint(d.dataset, d.root, d.protocol))
        if every is None:
            raise
        raise every from exc
    if summary.get("metrics") is None:  # a DDP rank other than 0: rank 0 reports
        return COLLAPSED if summary.get("status") == "stopped" else 0
    print(report(summary))
    if summary.get("status") == "stopped":
        print(f"dva train: stopped by the collapse guard: {summary['collapse']['fix']}", file=sys.stderr)
        return COLLAPSED
    return 0
