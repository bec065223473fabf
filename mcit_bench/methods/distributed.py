"""Statistics over the batch shares of every process: what a method measures on its training batches
must be the same on every process (and the same as one process would measure), or the processes'
models drift apart. On one process these are the plain statistics."""

from __future__ import annotations

import torch


def processes() -> tuple[int, int]:
    """(process count, this process's rank); (1, 0) outside a multi-process run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def row_share(rows: int, world: int, rank: int) -> slice:
    """This process's contiguous share of ``rows`` when each of ``world`` processes takes one."""
    size = -(-rows // world)
    return slice(min(rows, rank * size), min(rows, (rank + 1) * size))


def summed_over_processes(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over every process (a copy; the input is left as it is)."""
    if processes()[0] == 1:
        return value
    import torch.distributed as dist

    total = value.detach().clone()
    dist.all_reduce(total)
    return total


def mean_over_processes(rows: torch.Tensor) -> torch.Tensor:
    """The mean over the rows of every process's share of a global batch."""
    if processes()[0] == 1:
        return rows.mean(0)
    summed = summed_over_processes(torch.cat([rows.sum(0), rows.new_tensor([rows.shape[0]])]))
    return summed[:-1] / summed[-1]


def from_first_process(value: torch.Tensor) -> torch.Tensor:
    """The first process's ``value`` on every process (a copy): what a run whose checkpoint the first
    process writes carries forward, as if every process had loaded it."""
    if processes()[0] == 1:
        return value
    import torch.distributed as dist

    shared = value.detach().clone()
    dist.broadcast(shared, src=0)
    return shared


def on_any_process(flag: bool) -> bool:
    """Whether ``flag`` holds on at least one process. Every process must ask at the same point: a sharded
    model's forward gathers its weights from all of them, so a pass that one process needs, all run."""
    if processes()[0] == 1:
        return flag
    import torch.distributed as dist

    held = torch.tensor([int(flag)])
    dist.all_reduce(held, op=dist.ReduceOp.MAX)
    return bool(held.item())
