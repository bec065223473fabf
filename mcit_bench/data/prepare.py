"""A stream's data made ready: its root (generated for the synthetic stream, given for a published
one), a task's test split as a run evaluates it (images checked), and the references a submission's
predictions are set beside. Nothing here needs torch (``submit`` reads it); the training splits and
the validation carve are ``data/run_data.py``'s."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mcit_bench.core.errors import ConfigError, DataError
from mcit_bench.data.hub import load_hub_split
from mcit_bench.data.splits import load_split
from mcit_bench.data.stream import LocatedTask, SyntheticSource, TaskStream, locate_stream
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


def test_split(stream: TaskStream, located: LocatedTask, root: Path, cache_root: Path) -> Any:
    """One task's test split as a run evaluates it: the stream's size cut applied, every image present."""
    task = located.task
    if task.hub is not None:
        test_set, source = load_hub_split(task.hub, root, task.test, task.type, cache_root), root / task.hub.dataset
    else:
        test_set, source = load_split(located.split_specs()[1], cache_root / "arrow"), located.test
    if stream.test_per_task is not None and len(test_set) > stream.test_per_task:
        test_set = test_set.select(range(stream.test_per_task))
    require_images(test_set, source)
    if len(test_set) == 0:
        raise DataError(f"task {task.name!r} has an empty test split under {root}; check the files named in the "
                        f"sequence")
    return test_set


def test_references(stream: TaskStream, data_root: Path | None, cache_root: Path) -> dict[str, list[dict[str, Any]]]:
    """Every task's test split as its predictions files record it (id, answers, task type, metadata), in
    evaluation order: what a submission's predictions are checked against. A synthetic stream's split is
    generated from its identity; a published one's is read from ``data_root`` (ConfigError without it)."""
    import json

    root = prepare_data_root(stream, data_root, cache_root)
    references = {}
    for located in locate_stream(stream, root):
        test_set = test_split(stream, located, root, cache_root)
        references[located.task.name] = [
            {"question_id": row["id"], "answers": list(row["answers"]), "task_type": row["task_type"],
             "metadata": json.loads(row["metadata"])}
            for row in test_set.select_columns(["id", "answers", "task_type", "metadata"])]
    return references


def require_images(dataset, source: Path) -> None:
    """Every image a split names must exist; the first few missing ones are named."""
    missing = sorted({path for path in dataset["image"] if path and not os.path.isfile(path)})  # "": text only
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{source}: {len(missing)} image files are missing ({shown}); check --data-root or the "
                        f"'image' fields")
