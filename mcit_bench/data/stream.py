"""Task sequences: versioned YAML files -> an ordered ``TaskStream`` with a content hash."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mcit_bench.data.records import TASK_TYPES
from mcit_bench.data.synthetic import GENERATOR_VERSION
from mcit_bench.errors import ConfigError, first_problem


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


VARIANT_PLACEHOLDER = "{variant}"


class Annotations(_Strict):
    """An official answer file joined to the test records: every annotator's answer, or every caption.

    Formats: ``textvqa`` (``{"data": [{"question_id", "answers": [...]}]}``), ``vqav2``
    (``{"annotations": [{"question_id", "answers": [{"answer"}]}]}``), ``vizwiz`` (``[{"image",
    "answers": [{"answer"}]}]``, joined by image file name), ``coco_captions`` (``{"annotations":
    [{"image_id", "caption"}]}``, joined by question id).
    """

    file: str
    format: Literal["textvqa", "vqav2", "vizwiz", "coco_captions"]


class HubSource(_Strict):
    """A task read from a Hugging Face dataset already in instruction form, instead of JSON files.

    ``dataset`` is a folder under the data root (parquet or arrow files as the Hub lays them out,
    or a ``save_to_disk`` folder) or a Hub name found in the local Hugging Face cache (nothing is
    downloaded). ``columns`` maps record fields to the dataset's columns; the task's ``train`` and
    ``test`` then name splits.
    """

    dataset: str
    columns: dict[Literal["id", "image", "instruction", "answer", "answers", "options"], str]

    @model_validator(mode="after")
    def _enough_columns(self) -> HubSource:
        missing = {"id", "image", "instruction"} - set(self.columns)
        if missing or not {"answer", "answers"} & set(self.columns):
            needed = sorted(missing) + ([] if {"answer", "answers"} & set(self.columns) else ["answer or answers"])
            raise ValueError(f"hub columns must map {', '.join(needed)}")
        return self


class TaskDef(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    type: str
    metric: str | None = None  # None: the task type's default metric
    like: str | None = None  # the real benchmark a synthetic task mirrors, or the data set's name
    train: str
    test: str
    images: str = "."  # image paths in the JSON are relative to data_root/images
    # this task's training budget in steps; None: the stream's steps_per_task. Real streams differ
    # in size per task (CoIN trains one epoch on each), so budgets may differ too.
    steps: int | None = Field(default=None, gt=0)
    annotations: Annotations | None = None
    hub: HubSource | None = None  # read from a Hugging Face dataset; train and test are then split names
    # where each part is published ("instructions", "images", ...): shown by 'mcit-bench data check'
    published: dict[str, str] = {}

    def files(self) -> dict[str, str]:
        """The files this task reads, by role, relative to the data root (none for a Hub dataset)."""
        if self.hub is not None:
            return {}
        named = {"train": self.train, "test": self.test}
        if self.annotations is not None:
            named["annotations"] = self.annotations.file
        return named

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in TASK_TYPES:
            raise ValueError(f"unknown task type {value!r}; known types are {', '.join(TASK_TYPES)}")
        return value


class SyntheticSource(_Strict):
    kind: Literal["synthetic"]
    seed: int
    train_per_task: int = Field(gt=0)
    test_per_task: int = Field(gt=0)


class FilesSource(_Strict):
    kind: Literal["files"]


class Subset(_Strict):
    """A smaller preset of a sequence (``--subset ci``)."""

    train_per_task: int | None = Field(default=None, gt=0)
    test_per_task: int | None = Field(default=None, gt=0)
    steps_per_task: int | None = Field(default=None, gt=0)
    tasks: list[str] | None = None


class SequenceDef(_Strict):
    name: str
    version: int = Field(ge=1)
    description: str
    source: SyntheticSource | FilesSource = Field(discriminator="kind")
    steps_per_task: int | None = Field(default=None, gt=0)  # the stream's training budget; None: one epoch
    tasks: list[TaskDef] = Field(min_length=1)
    subsets: dict[str, Subset] = {}
    # instruction variants (CoIN's original, diverse, ten types): name -> folder put in place of
    # "{variant}" in the tasks' paths; the first is the default
    variants: dict[str, str] = {}

    @model_validator(mode="after")
    def _consistent(self) -> SequenceDef:
        names = [task.name for task in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError("task names must be unique")
        templated = any(VARIANT_PLACEHOLDER in path for task in self.tasks for path in task.files().values())
        if templated != bool(self.variants):
            raise ValueError("tasks' paths use '{variant}' exactly when the sequence lists variants")
        for subset_name, subset in self.subsets.items():
            unknown = set(subset.tasks or []) - set(names)
            if unknown:
                raise ValueError(f"subset {subset_name!r} names unknown tasks {sorted(unknown)}")
        return self


@dataclass(frozen=True)
class TaskStream:
    """An ordered stream of tasks, resolved for one subset, with its identity."""

    definition: SequenceDef
    subset: str | None
    variant: str | None  # the instruction variant, for sequences that have them
    tasks: tuple[TaskDef, ...]
    steps_per_task: int | None  # a subset's uniform budget overrides the tasks' own ``steps``
    train_per_task: int | None
    test_per_task: int | None

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def version(self) -> int:
        return self.definition.version

    @property
    def task_names(self) -> list[str]:
        return [task.name for task in self.tasks]

    def task_steps(self) -> dict[str, int | None]:
        """Each task's training budget in steps (None: one epoch over its data)."""
        if self.subset is not None and self.steps_per_task is not None:
            return {task.name: self.steps_per_task for task in self.tasks}
        return {task.name: task.steps or self.steps_per_task for task in self.tasks}

    def content_hash(self) -> str:
        """sha256 over the resolved task definitions: two runs with one hash saw the same stream."""
        payload = {
            "name": self.name,
            "version": self.version,
            "source": self.definition.source.model_dump(),
            # generated data is only the same data under the same generator
            "generator": GENERATOR_VERSION if isinstance(self.definition.source, SyntheticSource) else None,
            "subset": self.subset,
            "tasks": [task_identity(task) for task in self.tasks],
            "steps": self.task_steps(),
            "train_per_task": self.train_per_task,
            "test_per_task": self.test_per_task,
        }
        if self.variant is not None:  # only sequences with variants carry the key: older hashes stay valid
            payload["variant"] = self.variant
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def task_identity(task: TaskDef) -> dict:
    """What makes a task's data and scoring what they are: not where it is published, and no key a
    task without annotations lacks (so hashes recorded before those fields existed stay valid)."""
    absent = {name for name in ("annotations", "hub") if getattr(task, name) is None}
    return task.model_dump(exclude={"published"} | absent)


def builtin_sequences() -> dict[str, Path]:
    """Sequences shipped with the package, by name."""
    folder = files("mcit_bench.task_sequences")
    return {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml")}


def sequence_path(name_or_path: str) -> Path:
    """A built-in sequence by name, or a YAML file by path."""
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"sequence file {path} does not exist; pass a built-in name or an existing YAML file")
        return path
    known = builtin_sequences()
    if name_or_path not in known:
        import difflib

        close = difflib.get_close_matches(name_or_path, list(known), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown sequence {name_or_path!r}: {hint}known sequences are {', '.join(sorted(known))}")
    return known[name_or_path]


def read_sequence(path: Path) -> SequenceDef:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"sequence file {path} is not valid YAML ({error}); fix its syntax") from None
    try:
        return SequenceDef.model_validate(raw)
    except ValidationError as error:
        field, message = first_problem(error)
        raise ConfigError(f"sequence file {path} field {field}: {message}") from None


def resolve_variant(definition: SequenceDef, variant: str | None) -> tuple[str | None, list[TaskDef]]:
    """The chosen instruction variant (None: the first listed) and the tasks with their paths filled in."""
    if not definition.variants:
        if variant is not None:
            raise ConfigError(f"sequence {definition.name!r} has no instruction variants; drop --variant")
        return None, list(definition.tasks)
    chosen = variant or next(iter(definition.variants))
    if chosen not in definition.variants:
        raise ConfigError(f"sequence {definition.name!r} has no variant {chosen!r}; its variants are "
                          f"{', '.join(definition.variants)}")
    folder = definition.variants[chosen]

    def fill(path: str) -> str:
        return path.replace(VARIANT_PLACEHOLDER, folder)

    tasks = []
    for task in definition.tasks:
        update: dict[str, object] = {"train": fill(task.train), "test": fill(task.test)}
        if task.annotations is not None:
            update["annotations"] = task.annotations.model_copy(update={"file": fill(task.annotations.file)})
        tasks.append(task.model_copy(update=update))
    return chosen, tasks


def load_stream(name_or_path: str, subset: str | None = None, variant: str | None = None) -> TaskStream:
    """Read a sequence and resolve it for ``subset`` (None: the full stream) and instruction ``variant``."""
    path = sequence_path(name_or_path)
    definition = read_sequence(path)
    variant, tasks = resolve_variant(definition, variant)
    steps = definition.steps_per_task
    source = definition.source
    train = source.train_per_task if isinstance(source, SyntheticSource) else None
    test = source.test_per_task if isinstance(source, SyntheticSource) else None
    if subset is not None:
        if subset not in definition.subsets:
            known = ", ".join(sorted(definition.subsets)) or "none"
            raise ConfigError(f"sequence {definition.name!r} has no subset {subset!r}; its subsets are {known}")
        chosen = definition.subsets[subset]
        if chosen.tasks:
            tasks = [task for task in tasks if task.name in chosen.tasks]
        steps = chosen.steps_per_task or steps
        train = chosen.train_per_task or train
        test = chosen.test_per_task or test
    return TaskStream(definition, subset, variant, tuple(tasks), steps, train, test)
