"""Evaluation under ``torchrun``: each process takes a shard of the data, states are summed.

Metric states are counts (a confusion matrix; per-class tp/fp/fn/IoU sums), so summing
them across processes gives exactly the single-process numbers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


@contextlib.contextmanager
def process_group(device: str = "cpu") -> Iterator[ProcessGroup]:
    """The ``torchrun`` group for the duration of an evaluation. A group this opened is closed on
    the way out, after every process has got there: a process that exits while another still
    talks to it makes gloo abort the other (SIGABRT)."""
    opened = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    group = init_from_environment(device)
    try:
        yield group
    except BaseException:
        if opened and dist.is_initialized():  # no barrier: the others may never get there
            dist.destroy_process_group()
        raise
    if opened and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def init_from_environment(device: str = "cpu") -> ProcessGroup:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ProcessGroup()
    if not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return ProcessGroup(dist.get_rank(), dist.get_world_size())


def all_reduce_max(value: float, group: ProcessGroup) -> float:
    if not group.active:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())
