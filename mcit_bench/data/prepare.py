"""A stream's data made ready for a run: its root (generated for the synthetic stream, given for a
published one), and every task's train and evaluation splits through the arrow cache, with their
images checked before anything trains."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mcit_bench.config import ValidationSplit
from mcit_bench.core.errors import ConfigError, DataError
from mcit_bench.data.hub import load_hub_split
from mcit_bench.data.splits import load_split
from mcit_bench.data.stream import SyntheticSource, TaskStream, locate_stream
from mcit_bench.data.synthetic import SyntheticSpec, generate


def default_cache_root() -> Path:
    return Path(os.environ.get("MCIT_BENCH_CACHE", Path.home() / ".cache" / "mcit-bench"))


def prepare_data_root(stream: TaskStream, data_root: Path | None, cache_root: Path) -> Path:
    """Where the stream's files are: generated once for a synthetic stream, given for a real one."""
    source = stream.definition.source
    if isinstance(source, SyntheticSource):
        spec = SyntheticSpec(source.seed, stream.train_per_task or source.train_per_task,
                             stream.test_per_task or source.test_per_task, tuple(stream.task_names))
        return generate(spec, cache_root / "data")
    if data_root is None:
        raise ConfigError(f"sequence {stream.name!r} reads published data: pass --data-root with its files "
                          f"(see docs/DATA.md and 'mcit-bench data check {stream.name}')")
    if not data_root.is_dir():
        raise ConfigError(f"--data-root {data_root} is not a folder")
    return data_root


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
            train_source = test_source = root / task.hub.dataset
        else:
            train_spec, test_spec = located.split_specs()
            train_set = load_split(train_spec, arrow_cache)
            train_source, test_source = located.train, located.test
        require_images(train_set, train_source)
        if len(train_set) == 0:
            raise DataError(f"task {task.name!r} has an empty train split under {root}; check the files named in "
                            f"the sequence")
        if validation is not None:
            train[task.name], held_out[task.name] = carve_validation(train_set, validation, task.name, train_source)
            continue
        test_set = (load_hub_split(task.hub, root, task.test, task.type, cache_root) if task.hub is not None
                    else load_split(test_spec, arrow_cache))
        if stream.test_per_task is not None and len(test_set) > stream.test_per_task:
            test_set = test_set.select(range(stream.test_per_task))
        require_images(test_set, test_source)
        if len(test_set) == 0:
            raise DataError(f"task {task.name!r} has an empty test split under {root}; check the files named in the "
                            f"sequence")
        train[task.name], held_out[task.name] = train_set, test_set
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


def require_images(dataset, source: Path) -> None:
    """Every image a split names must exist; the first few missing ones are named."""
    missing = sorted({path for path in dataset["image"] if path and not os.path.isfile(path)})  # "": text only
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{source}: {len(missing)} image files are missing ({shown}); check --data-root or the "
                        f"'image' fields")
