"""Task sequences: versioned YAML files -> an ordered ``TaskStream`` with a content hash.

It runs past 400 lines because a sequence's YAML schema (the pydantic models of its tasks, sources,
answer files and published extras) and locating each task's files on disk are one concept: a field
of the schema is where a file is looked for.
"""

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

from mcit_bench.core.errors import ConfigError, first_problem, yaml_problem
from mcit_bench.core.records import DEFAULT_METRIC, TASK_TYPES
from mcit_bench.data.answers import AnswerFile
from mcit_bench.data.splits import SplitSpec
from mcit_bench.data.synthetic import GENERATOR_VERSION
from mcit_bench.data.synthetic import TASKS as SYNTHETIC_TASKS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


VARIANT_PLACEHOLDER = "{variant}"
# ``images`` or ``test_images`` naming the folder of the file found (MLLM-CL's image folder is its data
# file's, under names that differ between its README and its scripts)
FILE_FOLDER = "{file_folder}"


# One path, or the names a source has used for it over its releases: the first present wins.
PathChoice = str | list[str]


def candidates(paths: PathChoice) -> list[str]:
    return [paths] if isinstance(paths, str) else list(paths)


class Annotations(_Strict):
    """An official answer file joined to the test records: every annotator's answer, or every caption.

    Formats: ``textvqa`` (``{"data": [{"question_id", "answers": [...]}]}``), ``vqav2``
    (``{"annotations": [{"question_id", "answers": [{"answer"}]}]}``), ``vizwiz`` (``[{"image",
    "answers": [{"answer"}]}]``), ``coco_captions`` (``{"annotations": [{"image_id", "caption"}]}``).
    ``join`` says how a test record finds its entry: by question id, by image file name (VizWiz's
    own file), or by position (the record's place in the test file is the caption file's image id
    1..N, MCITlib's rule). An ``optional`` file that is absent leaves the test file's own answers.
    """

    file: PathChoice
    format: Literal["textvqa", "vqav2", "vizwiz", "coco_captions"]
    join: Literal["question_id", "image", "position"] | None = None  # None: by image for vizwiz, else by id
    optional: bool = False

    @property
    def join_rule(self) -> str:
        return self.join or ("image" if self.format == "vizwiz" else "question_id")


class PublishedScoring(_Strict):
    """How the source's own evaluation script scores the task (the results' ``as_published`` matrix).

    ``metric`` names a rule in ``mcit_bench.scoring.published``; ``extras`` are the official files
    that script reads beside the test file (role -> path or candidate paths), used where present.
    """

    metric: str
    extras: dict[str, PathChoice] = {}


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


TEST_FORMATS = ("coin", "dmole_vqa", "dmole_choice", "dmole_grounding", "coco_caption", "mllm_cl_fin")
BOX_CONVENTIONS = ("padded_square", "pixel", "thousand")


class TaskDef(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    type: str
    metric: str | None = None  # None: the task type's default metric
    like: str | None = None  # the real benchmark a synthetic task mirrors, or the data set's name
    train: PathChoice
    test: PathChoice
    images: str = "."  # image paths in the files are relative to data_root/images (FILE_FOLDER: the file's own)
    test_images: str | None = None  # where the test file's images are, when not under ``images``
    # conversation dialect of the training file (JSON list or JSONL): LLaVA's needs the <image> tag
    # wherever a record has an image; InternVL's puts it first when it is absent
    train_format: Literal["llava", "internvl"] = "llava"
    test_format: Literal[TEST_FORMATS] = "coin"  # see mcit_bench.data.formats.TEST_READERS
    prompt: str | None = None  # what the source's evaluation appends to each test question
    # how grounding boxes are written, in training answers and model outputs: normalised 0-1 on the
    # image padded to a square (LLaVA/CoIN), pixels of the image, or 0-1000 per axis (InternVL)
    boxes: Literal[BOX_CONVENTIONS] = "padded_square"
    # this task's training budget in steps; None: the stream's steps_per_task. Real streams differ
    # in size per task (CoIN trains one epoch on each), so budgets may differ too.
    steps: int | None = Field(default=None, gt=0)
    annotations: Annotations | None = None
    as_published: PublishedScoring | None = None

    @property
    def metric_name(self) -> str:
        """The metric the sound matrix scores this task with: its own, or its type's default."""
        return self.metric or DEFAULT_METRIC[self.type]
    hub: HubSource | None = None  # read from a Hugging Face dataset; train and test are then split names
    # where each part is published ("instructions", "images", ...): shown by 'mcit-bench data check'
    published: dict[str, str] = {}

    def files(self) -> dict[str, list[str]]:
        """The files this task reads, by role, as candidate paths under the data root (none for a Hub dataset)."""
        if self.hub is not None:
            return {}
        named = {"train": candidates(self.train), "test": candidates(self.test)}
        if self.annotations is not None:
            named["annotations"] = candidates(self.annotations.file)
        if self.as_published is not None:
            named.update({f"extra:{role}": candidates(paths) for role, paths in self.as_published.extras.items()})
        return named

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in TASK_TYPES:
            raise ValueError(f"unknown task type {value!r}; known types are {', '.join(TASK_TYPES)}")
        return value

    @model_validator(mode="after")
    def _hub_splits_are_names(self) -> TaskDef:
        if self.hub is not None and not (isinstance(self.train, str) and isinstance(self.test, str)):
            raise ValueError("a hub task's train and test name one split each")
        return self


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
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")  # a folder of every run: no '/' or '..'
    version: int = Field(ge=1)
    description: str
    source: SyntheticSource | FilesSource = Field(discriminator="kind")
    steps_per_task: int | None = Field(default=None, gt=0)  # the stream's training budget; None: one epoch
    tasks: list[TaskDef] = Field(min_length=1)
    subsets: dict[str, Subset] = {}
    # instruction variants (CoIN's original, diverse, ten types): name -> folder put in place of
    # "{variant}" in the tasks' paths (or the names it has had: the first present is used); the first
    # variant is the default
    variants: dict[str, PathChoice] = {}

    @model_validator(mode="after")
    def _consistent(self) -> SequenceDef:
        names = [task.name for task in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError("task names must be unique")
        if ".." in self.name:
            raise ValueError("the name may not contain '..'")
        if isinstance(self.source, SyntheticSource):
            import difflib

            for name in names:
                if name not in SYNTHETIC_TASKS:
                    close = difflib.get_close_matches(name, list(SYNTHETIC_TASKS), n=1, cutoff=0.5)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    raise ValueError(f"there is no synthetic task {name!r}: {hint}the generator makes "
                                     f"{', '.join(SYNTHETIC_TASKS)}")
        templated = any(VARIANT_PLACEHOLDER in path for task in self.tasks for paths in task.files().values()
                        for path in paths)
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


# Fields a task gained after hashes were first recorded: left out of its identity while they hold their
# default, so a task that does not use them keeps the hash it always had.
_LATER_FIELDS = ("annotations", "hub", "as_published", "test_images", "train_format", "test_format", "prompt",
                 "boxes")


def task_identity(task: TaskDef) -> dict:
    """What makes a task's data and scoring what they are: not where it is published, and no field
    that holds its default and was added later (so recorded hashes stay valid)."""
    defaults = {name: TaskDef.model_fields[name].default for name in _LATER_FIELDS}
    unused = {name for name in _LATER_FIELDS if getattr(task, name) == defaults[name]}
    return task.model_dump(exclude={"published"} | unused)


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
        raise ConfigError(f"sequence file {path} is not valid YAML ({yaml_problem(error)}); fix its syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"sequence file {path} is not UTF-8 text; save it as UTF-8 YAML") from None
    except RecursionError:
        raise ConfigError(f"sequence file {path} is nested too deeply to be a task sequence") from None
    try:
        return SequenceDef.model_validate(raw)
    except ValidationError as error:
        field, message = first_problem(error)
        raise ConfigError(f"sequence file {path} field {field}: {message}") from None


def resolve_variant(definition: SequenceDef, variant: str | None) -> str | None:
    """The chosen instruction variant (None: the first listed; None for sequences without variants)."""
    if not definition.variants:
        if variant is not None:
            raise ConfigError(f"sequence {definition.name!r} has no instruction variants; drop --variant")
        return None
    chosen = variant or next(iter(definition.variants))
    if chosen not in definition.variants:
        raise ConfigError(f"sequence {definition.name!r} has no variant {chosen!r}; its variants are "
                          f"{', '.join(definition.variants)}")
    return chosen


@dataclass(frozen=True)
class LocatedTask:
    """A task's files found under one data root: each role's path (the first candidate present, or
    the first candidate when none is, so errors name the canonical place), and what was found where."""

    task: TaskDef
    root: Path
    train: Path
    test: Path
    images: Path
    test_images: Path
    annotations: Path | None  # None: no answer file, or an optional one that is absent
    extras: dict[str, Path]  # the official files present for the published scoring
    absent_extras: tuple[str, ...]  # roles of those that are not
    notes: tuple[str, ...]  # which of several published names was found, for 'data check'

    @property
    def name(self) -> str:
        return self.task.name

    def split_specs(self) -> tuple[SplitSpec, SplitSpec]:
        """How the train and test files are read: their formats, images and official files."""
        task = self.task
        answer_file = (AnswerFile(self.annotations, task.annotations.format, task.annotations.join_rule)
                       if task.annotations is not None and self.annotations is not None else None)
        train = SplitSpec(self.train, self.images, task.type, "train", self.root, train_format=task.train_format)
        test = SplitSpec(self.test, self.test_images, task.type, "test", self.root, test_format=task.test_format,
                         prompt=task.prompt, boxes=task.boxes, answer_file=answer_file,
                         extras=tuple(sorted(self.extras.items())))
        return train, test


def first_present(root: Path, paths: list[str]) -> tuple[Path, bool]:
    for path in paths:
        if (root / path).exists():
            return root / path, True
    return root / paths[0], False


def locate_variant(stream: TaskStream, root: Path) -> str | None:
    """The folder of the stream's instruction variant under ``root``: the first of its names present."""
    if stream.variant is None:
        return None
    folder, _ = first_present(root, candidates(stream.definition.variants[stream.variant]))
    return str(folder.relative_to(root))


def locate_task(task: TaskDef, root: Path, variant_folder: str | None = None) -> LocatedTask:
    """Where each of ``task``'s files is under ``root`` (see ``LocatedTask``)."""
    notes: list[str] = []

    def find(role: str, paths: PathChoice) -> tuple[Path, bool]:
        options = [path.replace(VARIANT_PLACEHOLDER, variant_folder or "") for path in candidates(paths)]
        found, present = first_present(root, options)
        if present and len(options) > 1:
            notes.append(f"{role}: {found.relative_to(root)} (one of {', '.join(options)})")
        return found, present

    train, _ = find("train", task.train)
    test, _ = find("test", task.test)
    annotations = None
    if task.annotations is not None:
        path, present = find("annotations", task.annotations.file)
        annotations = path if present or not task.annotations.optional else None
    extras: dict[str, Path] = {}
    absent: list[str] = []
    for role, paths in (task.as_published.extras.items() if task.as_published else ()):
        path, present = find(role, paths)
        if present:
            extras[role] = path
        else:
            absent.append(role)
    images = train.parent if task.images == FILE_FOLDER else root / task.images
    test_folder = task.test_images if task.test_images is not None else task.images
    test_images = test.parent if test_folder == FILE_FOLDER else root / test_folder
    return LocatedTask(task, root, train, test, images, test_images, annotations, extras, tuple(absent),
                       tuple(notes))


def locate_stream(stream: TaskStream, root: Path) -> list[LocatedTask]:
    folder = locate_variant(stream, root)
    return [locate_task(task, root, folder) for task in stream.tasks]


def load_stream(name_or_path: str, subset: str | None = None, variant: str | None = None) -> TaskStream:
    """Read a sequence and resolve it for ``subset`` (None: the full stream) and instruction ``variant``."""
    path = sequence_path(name_or_path)
    definition = read_sequence(path)
    variant = resolve_variant(definition, variant)
    tasks = list(definition.tasks)
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
