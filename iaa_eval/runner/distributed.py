"""Data parallel over requests: every rank computes a slice, all ranks get every answer.

Started by ``torchrun --nproc-per-node N -m iaa_eval run ...`` (gloo on CPU, NCCL on GPU). Each
rank holds its own model copy; requests are dealt round-robin, answers gathered back into the
original order, so results equal a single process's. Rank 0 is the only writer of the cache,
results and samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Shards:
    """This process's place in the group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes files."""
        return self.rank == 0

    def mine(self, count: int) -> range:
        """The positions among ``count`` items that this rank computes (dealt round-robin)."""
        return range(self.rank, count, self.world_size)

    def map(self, items: Sequence[T], compute: Callable[[list[T]], list[R]]) -> list[R]:
        """``compute`` over ``items``, split across ranks; every rank returns all results in
        order."""
        if self.world_size == 1:
            return compute(list(items))
        import torch.distributed as dist

        mine = list(self.mine(len(items)))
        local = compute([items[i] for i in mine]) if mine else []
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, list(zip(mine, local, strict=True)))
        out: list[Any] = [None] * len(items)
        for part in gathered:
            for index, value in part:
                out[index] = value
        return out

    def barrier(self) -> None:
        """Wait for every rank (no-op alone)."""
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


@contextlib.contextmanager
def joined_shards(rank: int, world_size: int, device: str) -> Iterator[Shards]:
    """This process's :class:`Shards`, inside the process group torchrun set up (gloo on CPU, NCCL
    on CUDA), left cleanly at the end: a group still open at interpreter exit can abort a rank
    ("terminate called without an active exception") after all its work is done."""
    if world_size == 1:
        yield Shards(rank, world_size)
        return
    import torch.distributed as dist

    owner = not dist.is_initialized()
    if owner:
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    try:
        yield Shards(rank, world_size)
    finally:
        if owner:
            dist.destroy_process_group()
