"""torchrun / DDP plumbing: process group, rank info, gathering evaluation embeddings."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """This process's place in the run: rank, world size, local rank, device (a world of one by default)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and logs."""
        return self.rank == 0


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, NCCL on GPUs).

    ``device`` goes through :func:`dva.utils.resolve_device` first: a device that is not here
    (``cuda`` without CUDA) is a ValueError naming it, before any work.
    """
    from dva.utils import resolve_device

    dev = resolve_device(device)
    want_cuda = dev.type == "cuda"
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return DistInfo(device=dev)
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if want_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo")
    return DistInfo(rank, world, local, dev)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (a no-op in a world of one)."""
    if info.world > 1:
        dist.barrier()


def any_rank(info: DistInfo, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (so that all ranks stop together)."""
    if info.world == 1:
        return flag
    t = torch.tensor([int(flag)], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_rows(info: DistInfo, idx: np.ndarray, rows: np.ndarray, n_total: int) -> np.ndarray | None:
    """Collect ``rows`` (embedded by each rank for its ``idx``) into one array on rank 0.

    Every index appears once in the result: ranks embed disjoint strided shards, so nothing is
    duplicated (unlike a padded ``DistributedSampler``).
    """
    if info.world == 1:
        out = np.zeros((n_total, rows.shape[1]), rows.dtype)
        out[idx] = rows
        return out
    parts: list = [None] * info.world
    dist.all_gather_object(parts, (idx, rows))
    if not info.main:
        return None
    out = np.zeros((n_total, rows.shape[1]), rows.dtype)
    seen = np.zeros(n_total, bool)
    for i, r in parts:
        out[i] = r
        seen[i] = True
    assert seen.all(), "some evaluation rows were embedded by no rank"
    return out


def cleanup(info: DistInfo) -> None:
    """Leave the process group, if this process joined one."""
    if info.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
