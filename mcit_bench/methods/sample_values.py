"""Values of a sample that depend only on it and on frozen weights, computed once and then read: a task
selector's queries (expansion, BranchLoRA), D-MoLE's router embedding. A training run draws each sample
several times and evaluates after every stage, and these values never change, so a forward pass of the
frozen parts per draw is work the method does not ask for."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from mcit_bench.methods.distributed import on_any_process

Key = tuple[str, str]


def sample_key(row: dict[str, Any]) -> Key:
    """What the frozen parts read of a sample: its image and its instruction."""
    return str(row["image"]), str(row["instruction"])


class SampleValues:
    """Per sample, the tensors ``compute`` gives its batch (each [samples, ...]); a sample met before keeps
    its first values, so every later batch reads the same numbers whatever else it holds."""

    def __init__(self) -> None:
        self.values: dict[Key, tuple[torch.Tensor, ...]] = {}

    def of(self, samples: Sequence[dict[str, Any]] | None, compute: Callable[[], tuple[torch.Tensor, ...]],
           together: bool = False) -> tuple[torch.Tensor, ...]:
        """The batch's values, computed when one of its ``samples`` (its rows) is new; without rows, computed.

        ``together``: every process asks at this point (in training, where each holds its own share of
        a batch) and all compute when any has a new sample, as a sharded model's forward needs all of
        them; at evaluation each process answers its own rows alone and asks alone."""
        if samples is None:
            return compute()
        keys = [sample_key(row) for row in samples]
        new = not all(key in self.values for key in keys)
        if on_any_process(new) if together else new:
            for key, *values in zip(keys, *compute()):
                self.values.setdefault(key, tuple(values))
        return tuple(torch.stack(parts) for parts in zip(*(self.values[key] for key in keys)))
