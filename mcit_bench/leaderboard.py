"""The leaderboard file: verified submissions of finished runs, one entry per (key, seed).

An entry is keyed by the sequence at its version and content hash, the model, the method and the
protocol (whether the method was told the task at evaluation). ``submit`` accepts a run only when
its results validate, its summary is what its matrix gives, the run finished, its sequence is a
known one with the same content hash, a run on the packaged mcit-tiny used the weights shipped
with this version, and its (key, seed) is not there yet. The file is written
whole to a temporary file and renamed, sorted and indented, so it diffs line by line.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer

from mcit_bench.config import TrainingConfig
from mcit_bench.core.errors import ConfigError, DataError, first_problem
from mcit_bench.core.io import atomic_write_json, exclusive_lock
from mcit_bench.data.stream import load_stream
from mcit_bench.models.fingerprint import weights_fingerprint
from mcit_bench.models.tiny import TINY_NAME, packaged_path
from mcit_bench.schema import Results, load_results
from mcit_bench.scoring.continual import CONTINUAL_METRICS, shown_summary

# 2: entry keys carry the model's weights (version 1 files are read with the weights unknown)
LEADERBOARD_VERSION = 2
READABLE_VERSIONS = (1, 2)
Protocol = Literal["task-aware", "task-agnostic", "upper-bound"]
# Two-sided 95% Student t quantiles by degrees of freedom; beyond the table the normal 1.96 is close.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        15: 2.131, 20: 2.086, 30: 2.042}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EntryKey(_Strict):
    sequence: str  # name@version
    subset: str | None
    content_hash: str
    model: str
    # sha256 of the model's safetensors (results' run.model_weights): the same name on other weights is
    # another model, so its seeds never average with these; None for a hub id or a version 1 entry
    model_weights: str | None = None
    method: str
    protocol: Protocol
    # "default": the method's own settings; "tuned-<sha256 of the chosen settings, 12 hex>": settings a
    # 'mcit-bench tune' study chose (results' run.config.tuned); "custom-<sha256, 12 hex>": options or
    # training settings given by hand. Seeds of other choices never average.
    settings: str = Field(default="default", pattern=r"^(default|tuned-[0-9a-f]{12}|custom-[0-9a-f]{12})$")
    # "validation": a run scored on a split carved from its training data (a tuning trial, or a run
    # config with ``validation``). Submit refuses it; aggregated from run folders it stands apart from
    # the test runs of the same settings, whose scores it must never average with.
    split: Literal["test", "validation"] = "test"

    @model_serializer(mode="wrap")
    def _test_split_unwritten(self, handler) -> dict[str, Any]:
        data = handler(self)
        if data.get("split") == "test":  # the board's entries, all on test, keep the form they were written in
            del data["split"]
        return data

    def protocol_label(self) -> str:
        return (self.protocol + (f", {self.settings}" if self.settings != "default" else "")
                + (", validation split" if self.split == "validation" else ""))

    def label(self) -> str:
        subset = f"[{self.subset}]" if self.subset else ""
        weights = f" ({self.model_weights[:12]})" if self.model_weights else ""
        return f"{self.sequence}{subset} / {self.model}{weights} / {self.method} ({self.protocol_label()})"

    def sort_key(self) -> tuple:
        return (self.sequence, self.subset or "", self.model, self.model_weights or "", self.method, self.protocol,
                self.settings, self.split)


class Entry(_Strict):
    key: EntryKey
    seed: int
    tasks: list[str]
    matrix: list[list[float]]
    summary: dict[str, float | None]
    task_selection: dict[str, float]  # after the last stage; empty when the method is told the task
    trainable_params: int  # the most trained at once in any stage
    added_params: int
    wall_seconds: float
    harness_version: str
    commit: str | None
    device: str
    # True: submitted with its run directory, the matrix re-scored from the saved predictions; False:
    # a results file alone, its matrix taken on trust; None: submitted before submit re-scored
    verified: bool | None = None


class Leaderboard(_Strict):
    leaderboard_version: Literal[2] = LEADERBOARD_VERSION
    entries: list[Entry] = Field(default_factory=list)


def protocol_of(results: Results) -> Protocol:
    if results.run.upper_bound:
        return "upper-bound"
    return "task-aware" if results.run.task_id_at_eval else "task-agnostic"


def hand_set(config: dict[str, Any]) -> dict[str, Any]:
    """The method options and training settings a run's config gives that are not the defaults."""
    defaults = TrainingConfig().model_dump()
    training = {key: value for key, value in config.get("training", {}).items() if defaults.get(key) != value}
    options = config.get("method_options") or {}
    return {**({"method_options": options} if options else {}), **({"training": training} if training else {})}


def _digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def split_of(results: Results) -> Literal["test", "validation"]:
    """Whether a run was scored on test or on a validation split carved from its training data."""
    return "validation" if results.run.config.get("validation") else "test"


def settings_of(results: Results) -> str:
    """``default``; ``tuned-`` and the digest of the settings a tuning study chose; or ``custom-`` and
    the digest of the options and training settings given by hand."""
    tuned = results.run.config.get("tuned")
    if tuned:
        return f"tuned-{_digest(tuned.get('params', {}))}"
    chosen = hand_set(results.run.config)
    return f"custom-{_digest(chosen)}" if chosen else "default"


def entry_from_results(results: Results, verified: bool | None = None) -> Entry:
    sequence = results.run.sequence
    # a variant is another stream of the same tasks: its own leaderboard rows
    label = f"{sequence.name}@{sequence.version}" + (f":{sequence.variant}" if sequence.variant else "")
    key = EntryKey(sequence=label, subset=sequence.subset,
                   content_hash=sequence.content_hash, model=results.run.model,
                   model_weights=results.run.model_weights, method=results.run.method, protocol=protocol_of(results),
                   settings=settings_of(results),
                   split=split_of(results))
    return Entry(key=key, seed=results.run.seed, tasks=results.tasks, matrix=results.matrix,
                 summary=results.summary, task_selection=results.stages[-1].task_selection,
                 trainable_params=max(results.cost.trainable_params_per_stage),
                 added_params=results.cost.added_params, wall_seconds=results.cost.wall_seconds,
                 harness_version=results.run.harness_version, commit=results.run.git.get("commit"),
                 device=results.run.device, verified=verified)


def read_leaderboard(path: Path) -> Leaderboard:
    """The leaderboard at ``path``; an absent file is an empty leaderboard."""
    path = Path(path)
    if not path.exists():
        return Leaderboard()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"leaderboard {path} is not valid JSON ({error.msg} at line {error.lineno}); "
                        f"restore it from version control") from None
    found = data.get("leaderboard_version") if isinstance(data, dict) else None
    if found not in READABLE_VERSIONS:
        raise DataError(f"leaderboard {path} has leaderboard_version {found!r}; this mcit-bench reads "
                        f"versions {', '.join(map(str, READABLE_VERSIONS))}")
    if found == 1:  # written before keys named the weights: read as unknown, written back as version 2
        data["leaderboard_version"] = LEADERBOARD_VERSION
    try:
        return Leaderboard.model_validate(data)
    except ValidationError as error:
        field, message = first_problem(error)
        raise DataError(f"leaderboard {path}: field {field} is invalid ({message}); "
                        f"restore it from version control") from None


def write_leaderboard(board: Leaderboard, path: Path) -> None:
    """The whole board, sorted, as strict JSON (no NaN or infinity can reach the file)."""
    entries = sorted(board.entries, key=lambda entry: (entry.key.sort_key(), entry.seed))
    atomic_write_json(Path(path), Leaderboard(entries=entries).model_dump(mode="json"), strict=True)


def non_finite_fields(value: Any, where: str) -> list[str]:
    """The places in a decoded JSON value that hold NaN or an infinity, as ``matrix[1][2]``-style paths."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{where} ({value})"]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in non_finite_fields(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in non_finite_fields(item, f"{where}[{index}]")]
    return []


# What a name shown in every format may hold: no markup, formula or path trickery can pass it.
METHOD_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
MODEL_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./\-]{0,199}$")


def verify_names(results: Results, source: str) -> None:
    """Method and model names in the registry's charset, the method a registered one (known by name,
    without loading the plugins and torch with them)."""
    from mcit_bench.methods.registry import METHODS

    method, model = results.run.method, results.run.model
    if not METHOD_NAME.match(method):
        raise DataError(f"{source}: method name {method!r} is not a method name (lower-case letters, digits, "
                        f"'_', '-' and '.'); register the method under such a name")
    if method not in METHODS.declared_names():
        raise DataError(f"{source}: method {method!r} is not registered here; install the package that declares "
                        f"it (entry point group mcit_bench.methods) before submitting")
    if not MODEL_NAME.match(model):
        raise DataError(f"{source}: model name {model!r} holds characters a model id does not (letters, digits, "
                        f"'_', '.', '-', '/'); name the model by its Hugging Face id")


def verify_consistent(results: Results, source: str) -> None:
    """Refuse an unfinished run, one with a number that is not finite, or one whose summary is not
    what its matrix gives."""
    found = [place for name in ("matrix", "summary", "cost", "stages", "extra_scores", "as_published")
             for place in non_finite_fields(results.model_dump(mode="python")[name], name)]
    if found:
        raise DataError(f"{source}: field {found[0]} is not a finite number"
                        + (f" ({len(found) - 1} more)" if len(found) > 1 else "")
                        + "; a finished run has finite scores and costs: rerun or re-score it")
    if len(results.stages) < 1 or not results.run.upper_bound and (
            sum(len(stage.tasks) for stage in results.stages) != len(results.tasks)):
        raise DataError(f"{source}: the run trained {sum(len(s.tasks) for s in results.stages)} of "
                        f"{len(results.tasks)} tasks; finish it with --resume before submitting")
    wrong = results.summary_mismatches()
    if wrong:
        raise DataError(f"{source}: the summary does not match the matrix ({'; '.join(wrong)}); "
                        f"recompute it with 'mcit-bench score RUN_DIR'")


def verify_submission(results: Results, source: str) -> None:
    """Refuse a results document whose numbers or identity cannot be trusted."""
    verify_consistent(results, source)
    verify_names(results, source)
    if split_of(results) == "validation":
        raise DataError(f"{source}: this run (a tuning trial, or a run config with 'validation') is scored on a "
                        f"validation split carved from the training data; submit a run of the same settings on the "
                        f"test split ('mcit-bench run --tuned tuning.json', or the config without 'validation')")
    sequence = results.run.sequence
    try:
        version, content_hash = shipped_sequence(sequence.name, sequence.subset, sequence.variant)
    except ConfigError:
        raise DataError(f"{source}: sequence {sequence.name!r} (subset {sequence.subset!r}) is not one this "
                        f"mcit-bench ships; only built-in sequences go on the leaderboard") from None
    if (version, content_hash) != (sequence.version, sequence.content_hash):
        raise DataError(f"{source}: sequence {sequence.name}@{sequence.version} with content hash "
                        f"{sequence.content_hash[:12]} is not the shipped {sequence.name}@{version} "
                        f"({content_hash[:12]}); rerun on the current sequence")
    expected = shipped_tasks(sequence.name, sequence.subset, sequence.variant)
    if results.tasks != expected:
        raise DataError(f"{source}: tasks {results.tasks} are not {sequence.name}'s own ({expected}); "
                        f"a results file must name the tasks of the sequence it ran")
    if results.run.model == TINY_NAME and results.run.model_weights != shipped_tiny_weights():
        ran_on = results.run.model_weights[:12] if results.run.model_weights else "weights it did not record"
        raise DataError(f"{source}: the run used {TINY_NAME} with {ran_on}, not the weights this mcit-bench "
                        f"ships ({shipped_tiny_weights()[:12]}); rerun with this version")


@functools.lru_cache(maxsize=1)
def shipped_tiny_weights() -> str:
    return weights_fingerprint(packaged_path())


@functools.lru_cache(maxsize=64)
def shipped_sequence(name: str, subset: str | None, variant: str | None = None) -> tuple[int, str]:
    """(version, content hash) of a built-in sequence; a custom YAML path is not a shipped one."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        raise ConfigError(f"{name} is a file, not a built-in sequence")
    stream = load_stream(name, subset, variant)
    return stream.version, stream.content_hash()


@functools.lru_cache(maxsize=64)
def shipped_tasks(name: str, subset: str | None, variant: str | None = None) -> list[str]:
    return load_stream(name, subset, variant).task_names


def verified_by_predictions(results: Results, path: Path) -> bool:
    """Whether the matrix was re-scored from the run's saved predictions: True for a run directory (or
    its results.json) with its ``predictions/``, False for a results file alone. A matrix those
    predictions do not give is refused."""
    run_dir = path if path.is_dir() else path.parent
    if not (run_dir / "predictions").is_dir():
        return False
    from mcit_bench.rescore import check_against_predictions  # harness code, loaded only for run directories

    check_against_predictions(results, run_dir, str(path))
    return True


def submit_all(results_paths: Iterable[Path], leaderboard_path: Path, replace: bool = False) -> list[Entry]:
    """Verify runs and add them to the leaderboard in one write; the file is untouched unless all pass.

    An entry of the same key and seed is refused, or with ``replace`` swapped for the new run (a rerun
    after a fix to the method); two submitted runs of one key and seed are always refused.

    The read, the checks and the write happen under an exclusive lock on the leaderboard file, so
    concurrent submits queue instead of overwriting each other's entries.
    """
    results_paths = list(results_paths)
    with exclusive_lock(leaderboard_path):
        return _submit_locked(results_paths, Path(leaderboard_path), replace)


def _identity(entry: Entry) -> tuple[str, int]:
    return entry.key.model_dump_json(), entry.seed


def _submit_locked(results_paths: list[Path], leaderboard_path: Path, replace: bool) -> list[Entry]:
    board = read_leaderboard(leaderboard_path)
    taken = set() if replace else {_identity(entry) for entry in board.entries}
    added = []
    for path in results_paths:
        results = load_results(path)
        verify_submission(results, str(path))
        entry = entry_from_results(results, verified=verified_by_predictions(results, Path(path)))
        identity = _identity(entry)
        if identity in taken:
            where = "these submissions have" if replace else "the leaderboard already has"
            raise DataError(f"{path}: {where} {entry.key.label()} seed {entry.seed}; submit another seed"
                            + ("" if replace else ", or pass --replace to swap the old entry for this run"))
        taken.add(identity)
        added.append(entry)
    new = {_identity(entry) for entry in added}
    board.entries = [entry for entry in board.entries if _identity(entry) not in new] + added
    write_leaderboard(board, leaderboard_path)
    return added


# ------------------------------------------------------------------------------------ aggregation


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # sample standard deviation (0 for one seed)
    ci95: float  # half-width of the 95% confidence interval of the mean (t distribution; 0 for one seed)
    n: int


def t_quantile_95(dof: int) -> float:
    if dof in _T95:
        return _T95[dof]
    below = [d for d in _T95 if d < dof]
    return _T95[max(below)] if dof < 30 else 1.96


def stat(values: Iterable[float]) -> Stat | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    n = len(values)
    mean = float(np.mean(values))
    if n == 1:
        return Stat(mean, 0.0, 0.0, 1)
    std = float(np.std(values, ddof=1))
    return Stat(mean, std, t_quantile_95(n - 1) * std / math.sqrt(n), n)


@dataclass(frozen=True)
class Row:
    """All seeds of one key, summarised."""

    key: EntryKey
    seeds: list[int]
    tasks: list[str]
    metrics: dict[str, Stat | None]
    matrix: list[list[float]]  # the mean matrix over seeds
    stage_curve: list[float]  # mean accuracy on the tasks seen so far, after each stage (seed mean)
    task_selection: Stat | None
    trainable_params: int
    added_params: int
    wall_seconds: Stat | None
    # seeds whose matrix was re-scored from their predictions at submission; None when no seed says
    # (entries submitted before submit re-scored)
    verified_seeds: int | None = None
    # selection accuracy of each task after the last stage, mean over seeds (selecting methods only)
    selection_by_task: dict[str, float] = field(default_factory=dict)


def seen_task_curve(matrix: np.ndarray) -> list[float]:
    return [float(np.mean(matrix[i, :i])) for i in range(1, matrix.shape[1] + 1)]


def selection_by_task(group: list[Entry]) -> dict[str, float]:
    seeds = [entry.task_selection for entry in group if entry.task_selection]
    if not seeds:
        return {}
    return {task: round(float(np.mean([seed[task] for seed in seeds if task in seed])), 2)
            for task in seeds[0]}


def verified_seeds(group: list[Entry]) -> int | None:
    if all(entry.verified is None for entry in group):
        return None
    return sum(entry.verified is True for entry in group)


def aggregate(entries: Iterable[Entry]) -> list[Row]:
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.key.model_dump_json(), []).append(entry)
    rows = []
    for group in groups.values():
        group.sort(key=lambda entry: entry.seed)
        matrix = np.mean([np.array(entry.matrix) for entry in group], axis=0)
        selections = [float(np.mean(list(entry.task_selection.values()))) for entry in group if entry.task_selection]
        summaries = [shown_summary(entry.summary, group[0].key.protocol == "upper-bound") for entry in group]
        rows.append(Row(
            key=group[0].key, seeds=[entry.seed for entry in group], tasks=group[0].tasks,
            metrics={name: stat(summary[name] for summary in summaries) for name in CONTINUAL_METRICS},
            matrix=matrix.round(2).tolist(), stage_curve=[round(v, 2) for v in seen_task_curve(matrix)],
            task_selection=stat(selections), trainable_params=group[0].trainable_params,
            added_params=group[0].added_params, wall_seconds=stat(entry.wall_seconds for entry in group),
            verified_seeds=verified_seeds(group), selection_by_task=selection_by_task(group)))
    rows.sort(key=lambda row: (row.key.sort_key()[:4], -(row.metrics["final_acc"].mean
                                                         if row.metrics["final_acc"] else 0.0)))
    return rows


def results_entries(paths: Iterable[Path]) -> list[Entry]:
    """Entries straight from run directories or results files, custom sequences included."""
    entries = []
    for path in paths:
        results = load_results(path)
        verify_consistent(results, str(path))
        entries.append(entry_from_results(results))
    return entries


def board_summary(rows: list[Row]) -> dict[str, Any]:
    """A JSON-friendly view of aggregated rows (for tools and the HTML page)."""
    def stat_dict(value: Stat | None) -> dict[str, float] | None:
        return None if value is None else {"mean": round(value.mean, 3), "std": round(value.std, 3),
                                           "ci95": round(value.ci95, 3), "n": value.n}

    return {"rows": [{
        "sequence": row.key.sequence, "subset": row.key.subset, "model": row.key.model,
        "model_weights": row.key.model_weights, "method": row.key.method,
        "protocol": row.key.protocol, "settings": row.key.settings, "split": row.key.split, "seeds": row.seeds,
        "tasks": row.tasks,
        "metrics": {name: stat_dict(value) for name, value in row.metrics.items()},
        "task_selection": stat_dict(row.task_selection), "matrix": row.matrix, "stage_curve": row.stage_curve,
        "trainable_params": row.trainable_params, "added_params": row.added_params,
        "wall_seconds": stat_dict(row.wall_seconds), "verified_seeds": row.verified_seeds,
        "selection_by_task": row.selection_by_task} for row in rows]}
