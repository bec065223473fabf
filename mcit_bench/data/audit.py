"""``mcit-bench data check``: what of a stream's data is present under a data root, and what is wrong.

Every problem is collected, none stops the audit: a researcher fixing a download wants the whole
list at once. Nothing is downloaded; each task says where its parts are published.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mcit_bench.core.errors import DataError
from mcit_bench.data.splits import SplitSpec, read_split
from mcit_bench.data.stream import LocatedTask, TaskDef, TaskStream, candidates, locate_stream

SHOWN_MISSING = 3  # missing images named per split; the rest are counted


@dataclass
class SplitReport:
    role: str  # train, test or annotations
    path: Path
    present: bool
    records: int = 0
    text_only: int = 0  # records without an image
    images_missing: list[str] = field(default_factory=list)
    images_unreadable: list[str] = field(default_factory=list)


@dataclass
class TaskReport:
    task: TaskDef
    splits: list[SplitReport]
    problems: list[str]
    notes: list[str] = field(default_factory=list)  # which published names were found, how it is scored

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


def audit_split(spec: SplitSpec, task: TaskDef, check_images: bool) -> tuple[SplitReport, list[str]]:
    report = SplitReport(spec.split, spec.path, spec.path.is_file())
    problems: list[str] = []
    if not report.present:
        problems.append(f"{spec.path} is missing (the {spec.split} split of {task.name})")
        return report, problems
    try:
        records = read_split(spec, problems)
    except DataError as error:  # the file as a whole is unreadable, or its answer file is
        problems.append(str(error))
        return report, problems
    report.records = len(records)
    report.text_only = sum(1 for record in records if not record.image)
    if check_images:
        for image in sorted({record.image for record in records if record.image}):
            why = image_problem(image)
            if why == "missing":
                report.images_missing.append(image)
            elif why is not None:
                report.images_unreadable.append(f"{image}: {why}")
    if report.images_missing:
        shown = ", ".join(report.images_missing[:SHOWN_MISSING])
        more = len(report.images_missing) - SHOWN_MISSING
        problems.append(f"{spec.path}: {len(report.images_missing)} images are missing ({shown}"
                        + (f" and {more} more" if more > 0 else "") + f"); they belong under {spec.images}")
    problems.extend(f"{spec.path}: image {line}; replace the file or drop its record"
                    for line in report.images_unreadable)
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


def scoring_notes(located: LocatedTask, root: Path) -> list[str]:
    """How the task will be scored with the files present: the sound matrix's references, and the
    source's own rule with the official files it found or falls back without."""
    task = located.task
    metric = task.metric_name
    if task.annotations is None:
        references = "the test file's answers"
    elif located.annotations is not None:
        references = f"every reference in {located.annotations.relative_to(root)}"
    else:
        references = f"the test file's answers (optional {' or '.join(candidates(task.annotations.file))} absent)"
    notes = [f"scored: {metric} against {references}"]
    if task.as_published is not None:
        found = ", ".join(f"{role} {path.relative_to(root)}" for role, path in sorted(located.extras.items()))
        absent = ", ".join(located.absent_extras)
        notes.append(f"as published: {task.as_published.metric}"
                     + (f" with {found}" if found else "")
                     + (f"; without {absent} (absent: the rule's fallback applies)" if absent else ""))
    return notes


def audit_task(located: LocatedTask, root: Path, check_images: bool = True) -> TaskReport:
    task = located.task
    if task.hub is not None:
        return audit_hub_task(task, root)
    splits, problems = [], []
    for spec in located.split_specs():
        split, found = audit_split(spec, task, check_images)
        splits.append(split)
        problems.extend(found)
    if task.annotations is not None:
        path = located.annotations
        splits.append(SplitReport("annotations", path or root / str(task.annotations.file), path is not None))
        if path is not None and not path.is_file():
            problems.append(f"{path} is missing (the answer file of {task.name})")
    return TaskReport(task, splits, problems, list(located.notes) + scoring_notes(located, root))


def audit_stream(stream: TaskStream, root: Path, check_images: bool = True) -> list[TaskReport]:
    return [audit_task(located, root, check_images) for located in locate_stream(stream, root)]
