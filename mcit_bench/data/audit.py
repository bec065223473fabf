"""``mcit-bench data check``: what of a stream's data is present under a data root, and what is wrong.

Every problem is collected, none stops the audit: a researcher fixing a download wants the whole
list at once. Nothing is downloaded; each task says where its parts are published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mcit_bench.data.formats import AnswerFile, read_split
from mcit_bench.data.stream import TaskDef, TaskStream
from mcit_bench.errors import DataError

SHOWN_MISSING = 3  # missing images named per split; the rest are counted


@dataclass
class SplitReport:
    role: str  # train, test or annotations
    path: Path
    present: bool
    records: int = 0
    images_missing: list[str] = field(default_factory=list)
    images_unreadable: list[str] = field(default_factory=list)


@dataclass
class TaskReport:
    task: TaskDef
    splits: list[SplitReport]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def image_problem(path: str) -> str | None:
    """Why an image cannot be used (None: it opens). Reads the header only: fast on large folders."""
    try:
        with Image.open(path):  # parses the header (size, mode) without decoding the pixels
            pass
    except FileNotFoundError:
        return "missing"
    except Image.DecompressionBombError as error:
        return f"too large ({error})"
    except (OSError, SyntaxError, ValueError) as error:
        return f"unreadable ({error})"
    return None


def audit_split(task: TaskDef, role: str, root: Path, check_images: bool) -> tuple[SplitReport, list[str]]:
    path = root / getattr(task, role)
    report = SplitReport(role, path, path.is_file())
    problems: list[str] = []
    if not report.present:
        problems.append(f"{path} is missing (the {role} split of {task.name})")
        return report, problems
    answer_file = None
    if role == "test" and task.annotations is not None:
        answer_file = AnswerFile(root / task.annotations.file, task.annotations.format)
    try:
        records = read_split(path, root / task.images, task.type, role, answer_file, problems)
    except DataError as error:  # the file as a whole is unreadable, or its answer file is
        problems.append(str(error))
        return report, problems
    report.records = len(records)
    if check_images:
        for image in sorted({record.image for record in records}):
            why = image_problem(image)
            if why == "missing":
                report.images_missing.append(image)
            elif why is not None:
                report.images_unreadable.append(f"{image}: {why}")
    if report.images_missing:
        shown = ", ".join(report.images_missing[:SHOWN_MISSING])
        more = len(report.images_missing) - SHOWN_MISSING
        problems.append(f"{path}: {len(report.images_missing)} images are missing ({shown}"
                        + (f" and {more} more" if more > 0 else "") + f"); they belong under {root / task.images}")
    problems.extend(f"{path}: image {line}; replace the file or drop its record" for line in report.images_unreadable)
    return report, problems


def audit_hub_task(task: TaskDef, root: Path) -> TaskReport:
    """A task read from a Hugging Face dataset: each split opens and has the mapped columns."""
    from mcit_bench.data.hub import open_split

    splits, problems = [], []
    for role in ("train", "test"):
        split = getattr(task, role)
        report = SplitReport(role, root / task.hub.dataset, False)
        try:
            dataset = open_split(task.hub, root, split)
        except DataError as error:
            problems.append(str(error))
        else:
            report.present, report.records = True, len(dataset)
            absent = sorted(set(task.hub.columns.values()) - set(dataset.column_names))
            if absent:
                problems.append(f"Hugging Face dataset {task.hub.dataset!r} split {split!r} has no column "
                                f"{', '.join(repr(c) for c in absent)}; fix the task's hub.columns")
        splits.append(report)
    return TaskReport(task, splits, problems)


def audit_task(task: TaskDef, root: Path, check_images: bool = True) -> TaskReport:
    if task.hub is not None:
        return audit_hub_task(task, root)
    splits, problems = [], []
    for role in ("train", "test"):
        split, found = audit_split(task, role, root, check_images)
        splits.append(split)
        problems.extend(found)
    if task.annotations is not None:
        path = root / task.annotations.file
        splits.append(SplitReport("annotations", path, path.is_file()))
    return TaskReport(task, splits, problems)


def audit_stream(stream: TaskStream, root: Path, check_images: bool = True) -> list[TaskReport]:
    return [audit_task(task, root, check_images) for task in stream.tasks]
