"""Several processes share one embedding run (dva.retrieval.store.world, gloo): the single-process bytes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dva.retrieval.store import GalleryItem, embed_gallery, load_embeddings

SRC = Path(__file__).resolve().parents[2] / "src"

# One rank of a 2-process run: (1) a fresh run, (2) the resumption of a run one process
# started, (3) a rank with another model, which both ranks must refuse.
_RANK = r"""
import json, sys, torch
sys.path[:0] = [{src!r}, {tests!r}]
torch.set_num_threads(1)
import torch.distributed as dist
from conftest import TinyEmbedder
from dva.retrieval.store import GalleryItem, embed_gallery
dist.init_process_group("gloo")
rank = dist.get_rank()
items = [GalleryItem(p, lab) for p, lab in json.loads({items!r})]
report = {{"rank": rank}}
for name in ("fresh", "resumed"):
    emb, done = TinyEmbedder(seed=0), []
    s = embed_gallery(emb, items, {out!r} + "/" + name, shard_size=5, batch_size=2, progress=False,
                      on_shard_done=done.append)
    report[name] = {{"shards": done, "images": emb.images_seen, "count": s.count,
                     "embedded": s.shards_embedded}}
try:
    embed_gallery(TinyEmbedder(seed=rank), items, {out!r} + "/mixed", shard_size=5, progress=False)
    report["mixed"] = "no error"
except ValueError as exc:
    report["mixed"] = str(exc)
print("REPORT " + json.dumps(report), flush=True)
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != "meta.json"}


def _meta(d: Path) -> dict:
    return {k: v for k, v in json.loads((d / "meta.json").read_text()).items() if k not in ("created", "completed")}


class Stop(Exception):
    pass


def test_two_processes_write_the_single_process_result_bit_for_bit(gallery, make_embedder, tmp_path):
    paths, labels = gallery
    items = [GalleryItem(str(p), lab) for p, lab in zip(paths, labels)]  # 24 images -> 5 shards of 5
    TinyEmbedder = make_embedder  # the class, as the ranks import it

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each rank: the same kernels, the same bits
    try:
        embed_gallery(TinyEmbedder(seed=0), items, tmp_path / "ref", shard_size=5, batch_size=2, progress=False)

        def stop(i: int) -> None:
            if i == 1:
                raise Stop

        with pytest.raises(Stop):  # one process did shards 0 and 1, then died
            embed_gallery(TinyEmbedder(seed=0), items, tmp_path / "out" / "resumed", shard_size=5,
                          batch_size=2, progress=False, on_shard_done=stop)
    finally:
        torch.set_num_threads(threads)

    code = _RANK.format(src=str(SRC), tests=str(Path(__file__).parent), out=str(tmp_path / "out"),
                        items=json.dumps([[it.path, it.label] for it in items]))
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        reports.append(json.loads(next(ln for ln in out.splitlines() if ln.startswith("REPORT "))[7:]))

    # whole shards per rank: shard i goes to rank i % 2 on a fresh run
    assert [r["fresh"]["shards"] for r in reports] == [[0, 2, 4], [1, 3]]
    assert [r["fresh"]["images"] for r in reports] == [5 + 5 + 4, 5 + 5]
    # a resumed run shares out only the unfinished shards 2, 3, 4
    assert [r["resumed"]["shards"] for r in reports] == [[2, 4], [3]]
    assert all(r["fresh"]["count"] == r["resumed"]["count"] == 24 for r in reports)
    assert [r["resumed"]["embedded"] for r in reports] == [3, 3]
    for name in ("fresh", "resumed"):
        d = tmp_path / "out" / name
        assert _files(d) == _files(tmp_path / "ref"), f"{name}: files differ from the single-process run"
        assert _meta(d) == _meta(tmp_path / "ref")
        np.testing.assert_array_equal(load_embeddings(d).vectors, load_embeddings(tmp_path / "ref").vectors)
    # processes with different models refuse to share a run, on every rank
    assert all("rank 1" in r["mixed"] and "fingerprint" in r["mixed"] for r in reports), reports
