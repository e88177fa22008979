"""torchrun / DDP plumbing (src/dva_train/distributed.py): rank info, gathering, a world of one."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist

from dva_train.distributed import DistInfo, barrier, cleanup, gather_rows, init_distributed


def test_dist_info():
    assert DistInfo().main and DistInfo().world == 1 and DistInfo().device == torch.device("cpu")
    assert not DistInfo(rank=1, world=2).main


def test_single_process_without_torchrun(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    info = init_distributed("cpu")
    assert (info.rank, info.world, info.device) == (0, 1, torch.device("cpu"))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun with one process: no process group
    assert init_distributed("cpu").world == 1 and not dist.is_initialized()
    barrier(info)  # no-ops in a world of one
    cleanup(info)


def test_gather_rows_world_of_one_places_rows_by_index():
    rows = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = gather_rows(DistInfo(), np.array([4, 0, 2]), rows, 5)
    assert out.dtype == np.float32 and out.shape == (5, 2)
    assert out.tolist() == [[2, 3], [0, 0], [4, 5], [0, 0], [0, 1]]


def _worker(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    info = init_distributed("cpu")
    try:
        n = 7
        idx = np.arange(info.rank, n, info.world)  # the strided shards of the evaluation
        rows = np.stack([idx * 10.0, idx + 0.5], 1).astype(np.float32)
        out = gather_rows(info, idx, rows, n)
        barrier(info)
        np.save(os.path.join(folder, f"rank{rank}.npy"), np.array([]) if out is None else out)
        with open(os.path.join(folder, f"info{rank}.txt"), "w") as f:
            f.write(f"{info.rank} {info.world} {info.main} {out is None}")
    finally:
        cleanup(info)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")
def test_two_gloo_processes_gather_every_row_once_on_rank_0(tmp_path):
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "info0.txt").read_text() == "0 2 True False"
    assert (tmp_path / "info1.txt").read_text() == "1 2 False True"  # only rank 0 holds the result
    out = np.load(tmp_path / "rank0.npy")
    i = np.arange(7)
    assert out.tolist() == np.stack([i * 10.0, i + 0.5], 1).astype(np.float32).tolist()
    assert np.load(tmp_path / "rank1.npy").size == 0
