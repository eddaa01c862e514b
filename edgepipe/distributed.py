"""Data-parallel training through torch.distributed, started by `torchrun` or `accelerate launch`.

Both launchers start N copies of the command with RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT
set; `init_from_env` joins them into one process group (gloo on CPU, NCCL on GPUs). No
scheduler of ours: the launcher starts and supervises the processes.

Division of work: every rank runs the training stages (teacher fine-tune, distillation,
pruning recovery), each on its share of every global batch; rank 0 alone computes
everything else and writes the run dir; the others wait for its results at a barrier
and leave once the last training stage is done.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# torch is imported where a process group is used, not here: `edgepipe bench` records its results
# through edgepipe.stages (which takes a Dist) and never trains, so it starts without torch.


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            import torch

            torch.distributed.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's value on every rank (decisions that must agree, e.g. a cache hit)."""
        if not self.active:
            return obj
        import torch

        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.active:
            import torch

            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()


SINGLE = Dist()


def init_from_env() -> Dist:
    """Join the launcher's process group when WORLD_SIZE > 1; a plain run stays single."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    import torch

    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        # rank 0 may spend hours on exports and device benchmarks between training stages
        torch.distributed.init_process_group(backend=backend, timeout=timedelta(hours=12))
    return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size())


def current() -> Dist:
    """The process group the training loop should average gradients over (SINGLE when none)."""
    torch = sys.modules.get("torch")  # without torch loaded there is no process group
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size())
    return SINGLE


def shard(indices, dist: Dist):
    """This rank's share of one global batch: every other example, so shares differ by at most one.

    Why not torch's DistributedSampler: it splits the epoch's order, so N processes would see
    different global batches than one process; sharding each global batch keeps the two
    runs' batches (and so their students) the same.
    """
    return indices[dist.rank :: dist.world]


def average_gradients(params: list[torch.nn.Parameter], dist: Dist) -> None:
    """All-reduce the gradients in one flat buffer, as DDP does, for parameters outside the model too
    (the distillation loss has its own projection); ranks with no gradient for a parameter add zeros."""
    if not dist.active:
        return
    import torch

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).clone()
        offset += n


def sync_parameters(params: list[torch.nn.Parameter], dist: Dist) -> None:
    """Start every rank from rank 0's weights."""
    if dist.active:
        import torch

        for p in params:
            torch.distributed.broadcast(p.data, src=0)


def all_sum(value: float, dist: Dist) -> float:
    if not dist.active:
        return value
    import torch

    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t[0])
