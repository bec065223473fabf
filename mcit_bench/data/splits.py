"""One task split as records, read once through the arrow cache: the split's reader, the official
answers and extras joined, and the cache key that covers every file and every reading choice."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcit_bench.core.errors import DataError
from mcit_bench.core.io import file_digest
from mcit_bench.core.records import Record
from mcit_bench.data.answers import AnswerFile, join_annotations, read_annotations, require_annotators
from mcit_bench.data.formats import (
    READER_VERSION,
    ImagePlace,
    TestFormat,
    read_llava_conversations,
    read_test,
    report_problems,
)


def records_dataset(records: list[Record]):
    """Records as an in-memory ``datasets.Dataset``."""
    import datasets

    datasets.disable_progress_bars()
    return datasets.Dataset.from_list([record.to_row() for record in records])


def cached_dataset(cache_dir: Path, key: str, make_records: Callable[[], list[Record]]):
    """The dataset saved as arrow under ``cache_dir/key``, or ``make_records()`` saved there first.

    An entry that cannot be read back (a write killed half-way, a damaged file) is removed and rebuilt
    from the source files, which the key fingerprints, so the cache never decides a result.
    """
    import datasets

    datasets.disable_progress_bars()
    target = cache_dir / key
    if (target / "dataset_info.json").exists():
        try:
            return datasets.load_from_disk(str(target))
        except Exception:  # broad on purpose: datasets and pyarrow raise many kinds for a damaged entry
            shutil.rmtree(target, ignore_errors=True)
    dataset = records_dataset(make_records())
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".arrow-", dir=cache_dir))
    try:
        dataset.save_to_disk(str(staging))
        try:
            os.replace(staging, target)
        except OSError:  # a concurrent writer got there first; its copy is as good as ours
            if not (target / "dataset_info.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return datasets.load_from_disk(str(target))


@dataclass(frozen=True)
class SplitSpec:
    """Everything that decides how one split is read: its file, its images, its formats, and the
    official files joined to it."""

    path: Path
    images: Path
    task_type: str
    split: str  # train or test
    data_root: Path | None = None  # image paths must stay under it (None: under ``images``)
    train_format: str = "llava"
    test_format: str = "coin"
    prompt: str | None = None
    boxes: str = "padded_square"
    answer_file: AnswerFile | None = None
    extras: tuple[tuple[str, Path], ...] = field(default=())  # the published scoring's official files, by role

    @property
    def place(self) -> ImagePlace:
        return ImagePlace(self.images, self.data_root or self.images)

    def sources(self) -> Iterator[Path]:
        """Every file the split's records depend on."""
        yield self.path
        if self.answer_file is not None:
            yield self.answer_file.path
        yield from (path for _, path in self.extras)


def read_split(spec: SplitSpec, problems: list[str] | None = None) -> list[Record]:
    """One task split as records: the split's reader, the official answers and extras joined, the
    annotator count checked.

    With a ``problems`` list every problem found is appended there and the readable records are
    returned; without one the first problem is raised.
    """
    if spec.split == "train":
        records = read_llava_conversations(spec.path, spec.images, spec.task_type, problems, spec.train_format,
                                           spec.data_root)
    else:
        records = read_test_split(spec, problems)
    if not records:  # nothing to train on or score: every later step would fail further from the cause
        report_problems([f"{spec.path}: the {spec.split} split holds no usable records; a task needs at least one "
                 f"{spec.split} sample: fix the file or leave the task out of the sequence"], problems)
    return records


def read_test_split(spec: SplitSpec, problems: list[str] | None) -> list[Record]:
    """A test split with its official answers and extras joined and its annotator count checked."""
    from mcit_bench.data.published import join_extras

    form = TestFormat(spec.task_type, spec.boxes, spec.prompt)
    records = read_test(spec.path, spec.place, form, spec.test_format, problems)
    if spec.answer_file is not None:
        references = read_annotations(spec.answer_file.path, spec.answer_file.kind)
        records = join_annotations(records, references, spec.answer_file, spec.path, problems)
    records = join_extras(records, dict(spec.extras), spec.path, problems)
    unanswered = [record.id for record in records if not record.answers]
    if unanswered:
        report_problems([f"{spec.path}: {len(unanswered)} records have no answer (first: "
                         f"{unanswered[0]}); give them an "
                 f"'answer' or join the official answer file through the task's 'annotations'"], problems)
        records = [record for record in records if record.answers]
    require_annotators(records, spec.path, problems)
    return records


def load_split(spec: SplitSpec, cache_dir: Path | None):
    """Read one task split through the arrow cache (keyed by the files' content and every reading choice)."""
    if not spec.path.is_file():
        raise DataError(f"data file {spec.path} does not exist; check --data-root or run 'mcit-bench data check'")
    choices = (spec.split, spec.task_type, spec.train_format, spec.test_format, spec.prompt, spec.boxes,
               str(spec.images.resolve()), str((spec.data_root or spec.images).resolve()),
               spec.answer_file.kind if spec.answer_file else None, spec.answer_file.join if spec.answer_file else None,
               tuple(role for role, _ in spec.extras))
    key_source = f"{READER_VERSION}|{json.dumps(choices)}|" + "|".join(
        file_digest(path) for path in spec.sources() if path.is_file())
    key = hashlib.sha256(key_source.encode()).hexdigest()[:24]
    if cache_dir is None:
        return records_dataset(read_split(spec))
    return cached_dataset(cache_dir, key, lambda: read_split(spec))


def row_to_record(row: dict[str, Any]) -> Record:
    """The record behind a dataset row (the inverse of ``Record.to_row``)."""
    return Record(row["id"], row["image"], row["instruction"], tuple(row["answers"]), row["task_type"],
                  json.loads(row["metadata"]))
