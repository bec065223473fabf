"""The results document as a versioned schema: what a finished run writes and what a leaderboard accepts.

``results.json`` is validated against :class:`Results` wherever it is read for comparison (submit,
check, leaderboard), so a hand-edited or truncated file is refused with the field that is wrong
instead of being misread. The JSON Schema exported from these models is committed as
``leaderboard/schema.json`` for tools outside Python.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, model_validator

from mcit_bench.config import RunConfig
from mcit_bench.core.errors import DataError, first_problem
from mcit_bench.core.io import read_bounded_json
from mcit_bench.core.versions import FileVersion
from mcit_bench.results.frames import FrameRun, cells_frame, matrix_frame
from mcit_bench.rundir import RunPaths
from mcit_bench.scoring.continual import CONTINUAL_METRICS, summarize
from mcit_bench.scoring.task_metrics import METRICS

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 3  # the version this mcit-bench writes; 2: run.model_weights; 3: run.environment
# A stored summary may differ from the one recomputed from the stored matrix by rounding only.
SUMMARY_TOLERANCE = 1e-3


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SequenceRef(_Strict):
    name: str
    version: int
    subset: str | None
    variant: str | None = None  # the instruction variant (CoIN's original, diverse, ten types)
    content_hash: str = Field(min_length=8)
    tasks: list[str] = Field(min_length=1)


class Environment(_Strict):
    """Whether the run's packages were the reference lock's (``core/lock.py``): ``lock`` its digest when
    every pinned package was installed at its pin, else None and ``differs`` naming each that was not."""

    lock: str | None
    differs: list[str]


class RunInfo(_Strict):
    method: str
    method_options: dict[str, Any]
    config: RunConfig  # the resolved config the run was made with, typed as the command line made it
    sequence: SequenceRef
    model: str
    # sha256 of the model folder's safetensors (core/io.py weights_fingerprint); None for a hub id
    model_weights: str | None = None
    seed: int
    harness_version: str
    git: dict[str, Any]
    packages: dict[str, str | None]
    # None: written before environments were recorded (schema 2 and older, converted)
    environment: Environment | None = None
    # the guidance encoder of a method that reads one: its name and the sha256 of its weights
    guide: dict[str, str | None] | None = None
    device: str
    upper_bound: bool
    task_id_at_eval: bool
    run_dir: str

    @field_serializer("config")
    def _config_as_recorded(self, config: RunConfig) -> dict[str, Any]:
        return config.as_json()


class TaskInfo(_Strict):
    type: str
    metric: str
    like: str | None
    test_samples: int = Field(ge=1)


class StageEntry(_Strict):
    stage: int = Field(ge=1)
    tasks: list[str]
    steps: int = Field(ge=0)
    train_seconds: float = Field(ge=0)
    final_loss: float
    trainable_params: int = Field(ge=0)
    task_selection: dict[str, float]  # empty for methods that are told the task
    # the selecting methods' oracle pass, part of train-and-evaluate's wall time (runs made before lack it)
    oracle_seconds: float | None = Field(default=None, ge=0)


class RankMemory(_Strict):
    """What one process held: parameter bytes in FSDP shards and replicated, and its peak memory."""

    rank: int = Field(ge=0)
    param_bytes_sharded: int = Field(ge=0)
    param_bytes_replicated: int = Field(ge=0)
    peak_memory_mb: float = Field(ge=0)


class Cost(_Strict):
    trainable_params_per_stage: list[int]
    added_params: int = Field(ge=0)
    total_params: int = Field(ge=1)
    train_seconds: float = Field(ge=0)
    wall_seconds: float = Field(ge=0)
    # the part of wall_seconds spent on the oracle matrix, a report the harness adds (0 for a method
    # told the task; runs made before it was recorded lack it)
    oracle_seconds: float | None = Field(default=None, ge=0)
    peak_memory_mb: float = Field(ge=0)  # the main process's
    # every process's, in rank order (runs made before it was recorded lack it)
    per_rank: list[RankMemory] | None = None


class PublishedScores(_Strict):
    """The same predictions scored by each source's own evaluation script (``scoring/published.py``):
    the numbers to set beside a paper's table. The leaderboard and ``check`` use the sound matrix."""

    metrics: dict[str, str]  # task -> published rule
    matrix: list[list[float | None]]  # None: a cell the source's script gives no score
    summary: dict[str, float | None]
    absent: dict[str, str] = {}  # task -> why its cells are absent


class OracleScores(_Strict):
    """The same checkpoints evaluated with every trained task routed to its own experts (the true task
    id), for methods that choose a route: beside the routed matrix it separates what the experts can
    do from what the selector loses. Cells of tasks not trained yet keep the routed score."""

    matrix: list[list[float]]
    summary: dict[str, float | None]


class Results(_Strict):
    """One finished run: its identity, the accuracy matrix, the summary derived from it, its cost."""

    schema_version: Literal[3]
    run: RunInfo
    tasks: list[str] = Field(min_length=1)
    task_info: dict[str, TaskInfo]
    matrix: list[list[float]]
    summary: dict[str, float | None]
    stages: list[StageEntry] = Field(min_length=1)
    cost: Cost
    # metrics reported beside the matrix (BLEU-4 of caption tasks): metric -> task -> value after
    # each evaluated stage, the base model first
    extra_scores: dict[str, dict[str, list[float]]] = {}
    # sha256 of every predictions file the matrix was scored from ("stage1/sqa.jsonl"): a results file
    # submitted with its run directory is checked against them and re-scored from them
    prediction_digests: dict[str, str] = {}
    as_published: PublishedScores | None = None  # real streams whose sources publish their scoring
    oracle: OracleScores | None = None  # methods that choose a route (expansion, branchlora, dmole)

    @model_validator(mode="after")
    def _consistent(self) -> Results:
        tasks = len(self.tasks)
        if self.run.sequence.tasks != self.tasks:
            raise ValueError("tasks differs from run.sequence.tasks")
        if set(self.task_info) != set(self.tasks):
            raise ValueError("task_info must have one entry per task")
        if len(self.matrix) != tasks + 1 or any(len(row) != tasks for row in self.matrix):
            shape = f"{len(self.matrix)} x {sorted({len(row) for row in self.matrix})}"
            raise ValueError(f"matrix must be {tasks + 1} x {tasks} (base row, then one row per stage), got {shape}")
        for column, task in enumerate(self.tasks):
            bounded = self.task_info[task].metric not in METRICS or METRICS.get(self.task_info[task].metric).bounded
            values = [row[column] for row in self.matrix]
            if any(value < 0.0 or (bounded and value > 100.0) for value in values):
                limits = "0-100" if bounded else "0 or more"
                raise ValueError(f"matrix column {column} ({task}, {self.task_info[task].metric}) must lie in {limits}")
        if set(self.summary) != set(CONTINUAL_METRICS):
            raise ValueError(f"summary must have exactly the metrics {sorted(CONTINUAL_METRICS)}")
        if self.as_published is not None:
            published = self.as_published
            if set(published.metrics) != set(self.tasks):
                raise ValueError("as_published.metrics must name one rule per task")
            if [len(row) for row in published.matrix] != [len(row) for row in self.matrix]:
                raise ValueError("as_published.matrix must have the matrix's shape")
            if set(published.summary) != set(CONTINUAL_METRICS):
                raise ValueError(f"as_published.summary must have exactly the metrics {sorted(CONTINUAL_METRICS)}")
            unexplained = {task for row in published.matrix for task, value in zip(self.tasks, row)
                           if value is None} - set(published.absent)
            if unexplained:
                raise ValueError(f"as_published.matrix has absent cells of {sorted(unexplained)} that "
                                 f"as_published.absent does not explain")
        if self.oracle is not None:
            if [len(row) for row in self.oracle.matrix] != [len(row) for row in self.matrix]:
                raise ValueError("oracle.matrix must have the matrix's shape")
            if set(self.oracle.summary) != set(CONTINUAL_METRICS):
                raise ValueError(f"oracle.summary must have exactly the metrics {sorted(CONTINUAL_METRICS)}")
        if len(self.cost.trainable_params_per_stage) != len(self.stages):
            raise ValueError("cost.trainable_params_per_stage must have one entry per stage")
        return self

    def matrix_array(self) -> np.ndarray:
        return np.array(self.matrix, dtype=float)

    def frame_run(self) -> FrameRun:
        from mcit_bench.results.identity import protocol_of, sequence_label, settings_of  # it reads Results

        return FrameRun(sequence_label(self), self.run.sequence.subset, self.run.model, self.run.method,
                        protocol_of(self), settings_of(self), self.run.seed, self.tasks, self.matrix, self.summary,
                        max(self.cost.trainable_params_per_stage), self.cost.added_params, self.cost.wall_seconds)

    def to_pandas(self) -> pd.DataFrame:
        """One row per matrix cell (``results/frames.py``: CELL_COLUMNS)."""
        return cells_frame([self.frame_run()])

    def matrix_frame(self) -> pd.DataFrame:
        """The accuracy matrix: index ``base``, ``after <task>``...; columns the tasks."""
        return matrix_frame(self.frame_run())

    def summary_mismatches(self) -> list[str]:
        """Summary metrics that the stored matrix does not reproduce, as 'name: stored vs recomputed'."""
        wrong = []
        for name, recomputed in summarize(self.matrix_array()).items():
            stored = self.summary[name]
            if (stored is None) != (recomputed is None) or (
                    stored is not None and abs(stored - recomputed) > SUMMARY_TOLERANCE):
                wrong.append(f"{name}: stored {stored} vs {None if recomputed is None else round(recomputed, 4)} "
                             f"from the matrix")
        return wrong


def parse_results(data: Any, source: str) -> Results:
    """Validate a decoded results document; one sentence naming the file and the first bad field."""
    if not isinstance(data, dict):
        raise DataError(f"{source} is not a results document (a JSON object); pass the results.json of a run")
    tasks = data.get("tasks")
    if isinstance(tasks, list) and len(tasks) > MAX_TASKS:
        raise DataError(f"{source} names {len(tasks)} tasks, more than any stream ({MAX_TASKS}); "
                        f"it is not a results document")
    VERSION.require_current(data, source)
    try:
        return Results.model_validate(data)
    except ValidationError as error:
        field, message = first_problem(error)
        raise DataError(f"{source}: field {field} is invalid ({message}); "
                        f"the file was not written by a finished mcit-bench run or was edited") from None


MAX_TASKS = 256  # far beyond any stream; a matrix of absurd shape is refused before it is built


def _weights_unknown(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 did not record the model's weights: they become unknown (None)."""
    run = data.get("run")
    if isinstance(run, dict):
        run.setdefault("model_weights", None)
    return data


def _environment_unknown(data: dict[str, Any]) -> dict[str, Any]:
    """Version 2 did not record whether the run's packages were the lock's: unknown (None)."""
    run = data.get("run")
    if isinstance(run, dict):
        run.setdefault("environment", None)
    return data


VERSION = FileVersion("schema_version", SCHEMA_VERSION, {1: _weights_unknown, 2: _environment_unknown})


def converted_results(data: Any, source: str) -> tuple[dict[str, Any], int]:
    """A results document of an older version as the current one (validated), and the version it had."""
    data, found = VERSION.upgraded(data, source)
    parse_results(data, source)
    return data, found


def load_results(path: Path) -> Results:
    path = Path(path)
    if path.is_dir():
        path = RunPaths(path).results
        if not path.exists():
            raise DataError(f"{path} does not exist: the run has not finished (resume it with --resume)")
    return parse_results(read_bounded_json(path, "results file"), str(path))


def json_schema() -> dict[str, Any]:
    schema = Results.model_json_schema()
    schema["$id"] = f"https://mcit-bench/schema/results-v{SCHEMA_VERSION}.json"
    schema["title"] = f"mcit-bench results, schema version {SCHEMA_VERSION}"
    return schema
