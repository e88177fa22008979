"""The processes that share one embedding run (``torchrun ... -m dva_cli embed``).

Without an initialised ``torch.distributed`` group a run is rank 0 of 1 and every method here
is a no-op; with one, rank 0 checks or starts the run and the ranks take the unfinished shards
in turn (see :mod:`dva.retrieval.store.embed`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run (rank 0 of 1 without torch.distributed)."""

    rank: int = 0
    size: int = 1

    @classmethod
    def current(cls) -> World:
        """The initialised ``torch.distributed`` group, or rank 0 of 1."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def barrier(self) -> None:
        """Wait for every process of the run."""
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def from_rank0(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def check_same(self, plan: dict) -> None:
        """Refuse a run whose processes disagree on the model, inputs or settings."""
        if self.size == 1:
            return
        import torch.distributed as dist

        plans: list = [None] * self.size
        dist.all_gather_object(plans, plan)
        for r, other in enumerate(plans):
            diff = [k for k in {**plans[0], **other} if other.get(k) != plans[0].get(k)]  # keys of either
            if diff:
                details = ", ".join(f"{k}: {plans[0].get(k)!r} (rank 0) vs {other.get(k)!r}" for k in diff)
                raise ValueError(f"rank {r} of {self.size} embeds with other settings than rank 0 ({details}); "
                                 "start every process with the same model and --images")
