"""The statistics methods share over processes (mcit_bench.methods.distributed), on two gloo processes:
a sum, a mean over rows of unequal shares, the first process's value given to all, and whether a flag
holds on any process."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mcit_bench.methods.distributed import (
    from_first_process,
    mean_over_processes,
    on_any_process,
    processes,
    summed_over_processes,
)


def _each(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        rows = torch.tensor([[1.0, 2.0]]) if rank == 0 else torch.tensor([[3.0, 4.0], [5.0, 6.0]])
        value = torch.tensor([10.0 * (rank + 1)])
        found = {"processes": torch.tensor(processes()), "sum": summed_over_processes(value),
                 "mean": mean_over_processes(rows), "first": from_first_process(value), "value": value,
                 "any": torch.tensor([on_any_process(rank == 1), on_any_process(False)])}
        torch.save(found, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_processes_share_sums_means_and_the_first_processs_value(tmp_path):
    mp.spawn(_each, args=(str(tmp_path / "store"), str(tmp_path / "found")), nprocs=2, join=True)
    for rank in (0, 1):
        found = torch.load(tmp_path / f"found.{rank}")
        assert found["processes"].tolist() == [2, rank]
        assert found["sum"].tolist() == [30.0]
        assert found["mean"].tolist() == [3.0, 4.0]  # (1 + 3 + 5) / 3, (2 + 4 + 6) / 3
        assert found["first"].tolist() == [10.0]
        assert found["value"].tolist() == [10.0 * (rank + 1)]  # the input is left as it was
        assert found["any"].tolist() == [True, False]  # process 1's flag reaches process 0 too
    # one process: each is the plain value
    assert from_first_process(torch.tensor([7.0])).tolist() == [7.0]
    assert on_any_process(True) and not on_any_process(False)
