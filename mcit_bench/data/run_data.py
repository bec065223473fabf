"""Every task's train and evaluation splits for a run, through the arrow cache: the test split, or a
validation split carved from the training data with torch's seeded permutation (the split every
recorded tuning trial was scored on)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcit_bench.config import ValidationSplit
from mcit_bench.core.errors import DataError
from mcit_bench.data.hub import load_hub_split
from mcit_bench.data.prepare import require_images, test_split
from mcit_bench.data.splits import load_split
from mcit_bench.data.stream import TaskStream, locate_stream


def load_stream_data(stream: TaskStream, root: Path, cache_root: Path,
                     validation: ValidationSplit | None = None) -> tuple[dict, dict]:
    """Train and evaluation datasets of every task, through the arrow cache: the test split, or with
    ``validation`` a split carved from the training data (the test split is then never opened)."""
    arrow_cache = cache_root / "arrow"
    train, held_out = {}, {}
    for located in locate_stream(stream, root):
        task = located.task
        if task.hub is not None:
            train_set = load_hub_split(task.hub, root, task.train, task.type, cache_root)
            train_source = root / task.hub.dataset
        else:
            train_set = load_split(located.split_specs()[0], arrow_cache)
            train_source = located.train
        require_images(train_set, train_source)
        if len(train_set) == 0:
            raise DataError(f"task {task.name!r} has an empty train split under {root}; check the files named in "
                            f"the sequence")
        if validation is not None:
            train[task.name], held_out[task.name] = carve_validation(train_set, validation, task.name, train_source)
            continue
        train[task.name], held_out[task.name] = train_set, test_split(stream, located, root, cache_root)
    return train, held_out


def carve_validation(train_set, validation: ValidationSplit, task: str, source: Path) -> tuple[Any, Any]:
    """(what trains, the validation split): a fixed random share of the training samples, at most
    ``max_per_task``, drawn with the split's own seed so every trial holds out the same samples."""
    size = min(validation.max_per_task, max(1, round(validation.fraction * len(train_set))))
    if size >= len(train_set):
        raise DataError(f"task {task!r} has {len(train_set)} training samples in {source}, too few to hold out a "
                        f"validation split; tune on a sequence or subset with more training data")
    import torch  # the carve is torch's permutation: the split every recorded trial was scored on

    generator = torch.Generator().manual_seed(validation.seed)
    order = torch.randperm(len(train_set), generator=generator).tolist()
    return train_set.select(sorted(order[size:])), train_set.select(sorted(order[:size]))
