"""torch.distributed for the commands: sharded batch rendering and data-parallel training under ``torchrun``.

Rendering: each rank renders its share of the clips with the full model.

``torchrun --nproc-per-node N -m diffusion_renderer inverse|forward|relight|... INPUT... --out DIR`` starts N
processes; torch.distributed (NCCL on GPUs, gloo on CPUs) joins them. Clips are sorted and dealt round-robin
(``clips[rank::N]``), each rank on ``cuda:LOCAL_RANK``. Every clip is rendered with the same seed as in a single
process, and files are written atomically by whichever rank owns the clip, so the output folder is the same as
a single process writes, and a re-run resumes. A rank that fails a clip reports it in one line and goes on; at
the end the counts are summed and rank 0 prints the summary; every rank exits 1 if any clip failed anywhere.
Problems found before the split (unreadable inputs, bad env maps) are reported once, by rank 0.

With ``--context-parallel`` the ranks render every clip together instead: each holds the whole model and a
share of the clip's tokens in the DiT (``models/context_parallel.py``), rank 0 writes the files and reports.

Training (training/trainer.py) uses the same :class:`Ranks` and the float collectives below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job; ``world == 1`` outside torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    context_parallel: bool = False  # every rank renders every clip, the DiT's tokens split across the ranks

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def writes(self) -> bool:
        """Whether this rank writes and reports its clips (with context parallelism only rank 0 does)."""
        return self.is_main or not self.context_parallel

    def shard(self, items: list[T]) -> list[T]:
        """This rank's share: every ``world``-th item from ``rank`` (items are in a fixed order on all ranks); every
        item with context parallelism."""
        return list(items) if self.context_parallel else items[self.rank :: self.world]


def setup(device: str | None = None) -> Ranks:
    """Join the torchrun job if there is one (idempotent); NCCL when this rank has a GPU, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    import torch
    import torch.distributed as dist

    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        if cuda:
            torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    return ranks


def teardown(wait: bool = True) -> None:
    """Leave the torchrun job cleanly (a process group left open can abort the interpreter at exit).

    ``wait=False`` on an error path: the other ranks may be inside a collective and never reach a barrier.
    """
    import sys

    if "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()  # no rank tears its group down while another still needs it
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        import torch.distributed as dist

        dist.barrier()


def all_sum(ranks: Ranks, values: list[int]) -> list[int]:
    """Element-wise sum of ``values`` over all ranks (the values themselves in a single process)."""
    if ranks.world <= 1:
        return values
    import torch
    import torch.distributed as dist

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(tensor)
    return [int(v) for v in tensor.tolist()]


def all_sum_float(ranks: Ranks, value: float) -> float:
    """Sum of ``value`` over all ranks."""
    return float(_collective(ranks, value, "sum"))


def broadcast_float(ranks: Ranks, value: float) -> float:
    """Rank 0's ``value`` on every rank."""
    return float(_collective(ranks, value, "broadcast"))


def _collective(ranks: Ranks, value: float, op: str) -> float:
    if ranks.world <= 1:
        return value
    import torch
    import torch.distributed as dist

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    if op == "sum":
        dist.all_reduce(tensor)
    else:
        dist.broadcast(tensor, src=0)
    return tensor.item()
