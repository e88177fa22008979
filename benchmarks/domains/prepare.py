"""The four domains of the multi-domain benchmark: image lists, short training runs, galleries.

Each domain is an open-set split of a real dataset of the project's shared data folder
(``$DVA_<NAME>``, e.g. ``DVA_CARS196``, or ``../shared/data/<name>`` next to the checkout),
read in place (never copied):
a small training list (the first classes of the training half), a gallery (classes of the
unseen half) and held-out photos of the gallery classes that are not in the gallery (the
routing queries). Every step skips what exists already, so an interrupted run resumes.

The budget is deliberately short: the benchmark measures serving (memory, latency, routing),
not accuracy, so each checkpoint is the demo config trained for ``--max-steps`` steps on a
subset of the training classes.
"""
from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import _common as C

# name -> (dataset reader, folder under the shared data root)
DOMAINS = {
    "birds": ("cub100", "cub100"),
    "cars": ("folder", "cars196"),
    "aircraft": ("folder", "aircraft47"),
    "pets": ("folder", "pets37"),
}


def dataset_root(folder: str) -> Path:
    """Where dataset ``folder`` is (``dva.data.locate``'s rule: ``$DVA_<NAME>``, then ``../shared/data``)."""
    from dva.data.locate import shared_candidates

    for c in shared_candidates(f"data/{folder}", f"DVA_{folder.upper()}"):
        if c.is_dir():
            return c
    raise FileNotFoundError(f"{folder} not found: set DVA_{folder.upper()} or place it at ../shared/data/{folder}")


@dataclass
class Sizes:
    """How much of each dataset a domain uses (per class: at most, fewer where a class is smaller)."""

    train_classes: int = 16
    train_per_class: int = 12
    eval_per_class: int = 4  # images per unseen class in the training run's own final evaluation
    gallery_classes: int = 24
    gallery_per_class: int = 8
    heldout_per_class: int = 2


@dataclass
class DomainFiles:
    """Where one domain's lists, checkpoint and index live under the work folder."""

    name: str
    folder: Path

    @property
    def train_csv(self) -> Path:
        return self.folder / "train.csv"

    @property
    def gallery_csv(self) -> Path:
        return self.folder / "gallery.csv"

    @property
    def heldout_csv(self) -> Path:
        return self.folder / "heldout.csv"

    @property
    def checkpoint(self) -> Path:
        return self.folder / "train" / "last.safetensors"

    @property
    def index(self) -> Path:
        return self.folder / "idx"


def _by_class(records: list) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for r in records:
        out.setdefault(r.label, []).append(r.path)
    return {c: sorted(p) for c, p in sorted(out.items())}


def _write_csv(path: Path, rows: list[tuple[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(rows)
    os.replace(tmp, path)


def write_lists(name: str, files: DomainFiles, sizes: Sizes, seed: int = 0) -> dict:
    """The three lists of one domain (train, gallery, held-out), chosen with a seeded shuffle."""
    from dva.data import load_split

    reader, folder = DOMAINS[name]
    split = load_split(reader, str(dataset_root(folder)), "open")
    rng = random.Random(f"{seed}-{name}")
    train, test = _by_class(split.train), _by_class(split.test)
    train_ids = list(train)[: sizes.train_classes]
    # The training run evaluates itself on unseen classes (as many as it trains on: the csv reader's
    # open protocol splits the classes in half). They may be gallery classes: nothing trains on them.
    eval_ids = list(test)[: len(train_ids)]
    gallery_ids = list(test)[: sizes.gallery_classes]
    rows = []
    for j, c in enumerate(train_ids):
        rows += [(p, j) for p in rng.sample(train[c], min(sizes.train_per_class, len(train[c])))]
    for j, c in enumerate(eval_ids):
        rows += [(p, len(train_ids) + j) for p in rng.sample(test[c], min(sizes.eval_per_class, len(test[c])))]
    gallery, heldout = [], []
    for c in gallery_ids:
        paths = rng.sample(test[c], len(test[c]))
        label = split.class_names.get(c, str(c))
        heldout += [(p, label) for p in paths[: sizes.heldout_per_class]]
        lo = sizes.heldout_per_class
        gallery += [(p, label) for p in paths[lo: lo + sizes.gallery_per_class]]
    _write_csv(files.train_csv, rows)
    _write_csv(files.gallery_csv, gallery)
    _write_csv(files.heldout_csv, heldout)
    return {"dataset": folder, "reader": reader, "train_classes": len(train_ids), "train_images":
            sum(1 for _, lab in rows if lab < len(train_ids)), "gallery_classes": len(gallery_ids),
            "gallery_images": len(gallery), "heldout_images": len(heldout)}


def _dva(*args: str, log: Path) -> float:
    """Run ``dva ARGS`` (this interpreter) with its output in ``log``; returns the wall time."""
    t0 = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        r = subprocess.run([sys.executable, "-m", "dva_cli", *args], stdout=fh, stderr=subprocess.STDOUT,
                           env={**C.child_env(), "HF_HUB_OFFLINE": "1"}, check=False)
    if r.returncode:
        raise RuntimeError(f"`dva {' '.join(args)}` failed (exit {r.returncode}); see {log}")
    return time.perf_counter() - t0


def train(files: DomainFiles, max_steps: int) -> float | None:
    """Train the demo config on the domain's list (skipped when its checkpoint exists)."""
    if files.checkpoint.is_file():
        return None
    return _dva("train", "--config", "demo", "--data.dataset", "csv", "--data.root", str(files.train_csv),
                "--train.max_steps", str(max_steps), "--train.epochs", "100", "--train.eval_every", "0",
                "--data.val_classes", "0", "--train.eval_frozen", "false",
                "--output_dir", str(files.folder / "train"), "--no-progress",
                log=files.folder / "train.log")


def index(files: DomainFiles) -> float | None:
    """Embed the gallery with the domain's checkpoint and index it (skipped when the index exists)."""
    if (files.index / "index.json").is_file():
        return None
    t = _dva("embed", "--checkpoint", str(files.checkpoint), "--images", str(files.gallery_csv),
             "--out", str(files.folder / "emb"), "--runtime", "torch", "--no-progress", log=files.folder / "index.log")
    return t + _dva("index", "--embeddings", str(files.folder / "emb"), "--out", str(files.index),
                    log=files.folder / "index.log")


def prepare(work: Path, sizes: Sizes, max_steps: int, names: list[str] | None = None,
            index_too: bool = True) -> dict[str, dict]:
    """Lists, checkpoint and index of every domain under ``work`` (resumable); per-domain facts.

    Every domain is trained before any is indexed: the checkpoints are the long part.
    """
    out = {}
    for name in names or list(DOMAINS):
        files = DomainFiles(name, work / name)
        out[name] = write_lists(name, files, sizes)
        print(f"[domains] {name}: {out[name]}", flush=True)
        out[name]["train_s"] = train(files, max_steps)
        print(f"[domains] {name}: trained ({out[name]['train_s']} s; None = existed)", flush=True)
    for name in out if index_too else ():
        out[name]["index_s"] = index(DomainFiles(name, work / name))
        print(f"[domains] {name}: indexed ({out[name]['index_s']} s; None = existed)", flush=True)
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="prepare the four domains (lists, checkpoints, indexes)")
    ap.add_argument("--work", default=str(C.REPO / "runs" / "domains_bench"))
    ap.add_argument("--max-steps", type=int, default=60)
    ap.add_argument("--no-index", action="store_true", help="train only")
    a = ap.parse_args()
    prepare(Path(a.work), Sizes(), a.max_steps, index_too=not a.no_index)
