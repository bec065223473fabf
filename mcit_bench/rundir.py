"""The run directory: the only module that knows its layout.

``<output>/<sequence>/<method>/<run_id>/`` holds ``config.json`` (the resolved config),
``progress.json`` (finished stages, their matrix rows and the sha256 of every file each wrote,
rewritten atomically after each stage), ``checkpoints/stage{i}/`` (trained weights and method state
as safetensors), ``predictions/stage{i}/{task}.jsonl`` (and ``predictions-oracle/`` for methods that
choose a route) and, at the end, ``results.json``. Claiming a directory, verifying a resume, and
reading and writing predictions and checkpoints happen here; nothing here needs torch until a
checkpoint is read or written.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcit_bench.core.errors import ConfigError, DataError
from mcit_bench.core.io import atomic_write_json, atomic_write_text, file_digest
from mcit_bench.core.records import Record

if TYPE_CHECKING:

    from mcit_bench.config import RunConfig
    from mcit_bench.data.stream import TaskStream


PREDICTIONS = "predictions"
# predictions of selecting methods routed by the true task id, laid out as predictions/ is

ORACLE_PREDICTIONS = "predictions-oracle"

def predictions_path(run_dir: Path, stage: int, task: str, folder: str = PREDICTIONS) -> Path:
    """One task's predictions after one stage (0: the base model) in a run directory."""
    return run_dir / folder / f"stage{stage}" / f"{task}.jsonl"

def predictions_files(run_dir: Path) -> list[Path]:
    """Every predictions file a run scored: routed and, for a method that selects, oracle."""
    return sorted(path for folder in (PREDICTIONS, ORACLE_PREDICTIONS)
                  for path in (run_dir / folder).glob("stage*/*.jsonl"))

@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def progress(self) -> Path:
        return self.root / "progress.json"

    @property
    def results(self) -> Path:
        return self.root / "results.json"

    def predictions(self, stage: int, task: str, folder: str = PREDICTIONS) -> Path:
        """One task's predictions after one stage (``ORACLE_PREDICTIONS``: routed by the true task)."""
        return predictions_path(self.root, stage, task, folder)

    def checkpoint(self, stage: int) -> Path:
        return self.root / "checkpoints" / f"stage{stage}"

    def checkpoint_staging(self, stage: int) -> Path:
        """Where a checkpoint is written before it is renamed into place (a leftover is never read)."""
        return self.root / "checkpoints" / f"stage{stage}.partial"

PATH_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+\-]{0,127}$")

def path_part(value: str, what: str) -> str:
    """One folder name from a user or a file: letters, digits and ``_.@+-``, never ``..``, ``/`` or absolute."""
    if not PATH_PART.match(value) or ".." in value:
        raise ConfigError(f"{what} {value!r} cannot name a folder (it may hold letters, digits and '_.@+-', "
                          f"start with a letter or digit, and contain no '/' or '..'); choose another")
    return value

def run_directory(output_root: Path, stream: TaskStream, config: RunConfig, run_id: str | None) -> Path:
    """``<output>/<sequence>/<method>/<run id>``: each part checked, so a run never lands outside ``output``."""
    default_id = (f"seed{config.seed}" + (f"-{config.subset}" if config.subset else "")
                  + (f"-{config.variant}" if config.variant else "")
                  + ("-validation" if config.validation else ""))  # never the folder of the test run
    return (output_root / path_part(stream.name, "sequence name") / path_part(config.method, "method name")
            / path_part(run_id or default_id, "run id"))

def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two configs."""
    differences = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences.extend(config_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            differences.append(f"{prefix}{key} ({a!r} there, {b!r} now)")
    return differences

def claim_run_directory(paths: RunPaths, config: RunConfig, resume: bool, overwrite: bool,
                        write: bool = True) -> dict[str, Any]:
    """Check the run directory against the config; returns the saved progress (empty for a new run).

    An existing directory is only ever continued (``resume``, same config) or replaced
    (``overwrite``); anything else is refused before a single file is touched. With ``write``
    false it only checks (every process of a multi-process run checks; the main one writes).
    """
    wanted = config.as_json()
    if paths.root.is_symlink():  # --overwrite would delete through it, or fail half-way
        raise ConfigError(f"run directory {paths.root} is a symbolic link; point --output at the real folder or "
                          f"choose another --run-id")
    if paths.root.exists() and not paths.root.is_dir():
        raise ConfigError(f"{paths.root} is a file, not a run directory; choose another --output or --run-id")
    if paths.config.exists():
        saved = read_run_json(paths.config, "pass --overwrite to start the run again")
        differences = config_differences(saved, wanted) if not overwrite else []
        if overwrite:
            if write:
                shutil.rmtree(paths.root)
        elif differences:
            raise ConfigError(f"run directory {paths.root} was made with a different config: "
                              f"{'; '.join(differences)}; pass --overwrite to replace it or --run-id to keep both")
        elif not resume:
            state = "finished" if paths.results.exists() else "unfinished"
            raise ConfigError(f"run directory {paths.root} already holds a run with this config ({state}); pass "
                              f"--resume to continue it or --overwrite to start again")
        elif paths.progress.exists():
            try:
                return read_run_json(paths.progress, "")
            except DataError:  # nothing it says can be trusted: the run starts again from its first stage
                return {"unreadable": str(paths.progress)}
    elif resume:
        raise ConfigError(f"run directory {paths.root} holds no run to resume; drop --resume to start one")
    elif paths.root.exists() and any(paths.root.iterdir()) and not overwrite:
        raise ConfigError(f"run directory {paths.root} exists and is not a run; choose another --run-id or --output")
    if write:
        try:
            paths.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(paths.config, wanted)
        except OSError as error:
            raise ConfigError(f"cannot write the run directory {paths.root} ({error.strerror}); choose an --output "
                              f"you can write to") from None
    return {}

def branch_run_directory(source: RunPaths, target: RunPaths, config: RunConfig, stages_done: int) -> None:
    """``target`` as a copy of ``source`` (a run stopped after ``stages_done`` stages) under ``config``,
    ready to be resumed: its files as they are, so the verified resume checks them, and its config
    replaced. The two configs may differ only in what no finished stage used (``stage_options`` of
    later stages): the plasticity protocol tries each setting of the next stage from one finished run."""
    def before(recorded: dict[str, Any]) -> dict[str, Any]:
        stages = {key: value for key, value in (recorded.get("stage_options") or {}).items()
                  if int(key) <= stages_done}
        return {**{key: value for key, value in recorded.items() if key != "stage_options"}, "stage_options": stages}

    differences = config_differences(before(read_run_json(source.config, "")), before(config.as_json()))
    if differences:
        raise ConfigError(f"run directory {source.root} cannot continue as this run: {'; '.join(differences)} "
                          f"would change stages it has already trained")
    shutil.rmtree(target.root, ignore_errors=True)
    shutil.copytree(source.root, target.root, ignore=shutil.ignore_patterns(source.results.name))
    atomic_write_json(target.config, config.as_json())


def read_run_json(path: Path, fix: str) -> dict[str, Any]:
    """A JSON file of a run directory, or one sentence saying it is damaged and what to do."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        raise DataError(f"{path} is damaged ({error}); {fix or 'the run cannot use it'}") from None
    except RecursionError:
        raise DataError(f"{path} is damaged (nested too deeply); {fix or 'the run cannot use it'}") from None
    if not isinstance(value, dict):
        raise DataError(f"{path} is damaged (not a JSON object); {fix or 'the run cannot use it'}")
    return value

def stage_files(paths: RunPaths, stage: int) -> list[Path]:
    """What finishing ``stage`` wrote: its predictions and (after training) its checkpoint."""
    files = [file for folder in (PREDICTIONS, ORACLE_PREDICTIONS)
             for file in sorted((paths.root / folder / f"stage{stage}").glob("*.jsonl"))]
    return files + (sorted(paths.checkpoint(stage).glob("*")) if stage > 0 else [])

def stage_digests(paths: RunPaths, stage: int) -> dict[str, str]:
    return {str(path.relative_to(paths.root)): file_digest(path) for path in stage_files(paths, stage)}

def first_unverified(paths: RunPaths, digests: dict[str, dict[str, str]], stages: int) -> tuple[int, str | None]:
    """The first stage (0: the base model's evaluation) whose files are not the ones progress.json
    recorded, and the first file that differs; (stages + 1, None) when every stage verifies."""
    for stage in range(stages + 1):
        recorded = digests.get(str(stage))
        if recorded is None:
            return stage, f"stage {stage} has no recorded digests"
        for name, digest in recorded.items():
            path = paths.root / name
            if not path.is_file() or file_digest(path) != digest:
                return stage, name
    return stages + 1, None

def verified_progress(paths: RunPaths, progress: dict[str, Any], say: Callable[[str], Any]) -> dict[str, Any]:
    """The saved progress cut back to the stages whose files still verify against their sha256.

    A run killed mid-write, a truncated or bit-flipped file: the run restarts after the last stage
    it can prove intact, and says so; it never loads a file it cannot verify. Progress written
    before digests were recorded is kept as it is (its files are checked when loaded).
    """
    if "unreadable" in progress:
        say(f"{progress['unreadable']} is damaged: the run starts again from its first stage")
        return {}
    if "digests" not in progress:
        return progress
    done = len(progress.get("stages", []))
    bad, name = first_unverified(paths, progress["digests"], done)
    if bad > done:
        return progress
    if bad == 0:
        say(f"{name} of the base model's evaluation does not match its digest: the run starts again")
        return {}
    say(f"{name} of stage {bad} does not match its digest: resuming after stage {bad - 1}")
    kept_stages = progress["stages"][: bad - 1]
    kept_rows = 1 + sum(len(entry["tasks"]) for entry in kept_stages)
    return {**progress, "stages": kept_stages,
            "rows": {k: v for k, v in progress["rows"].items() if int(k) < kept_rows},
            "digests": {k: v for k, v in progress["digests"].items() if int(k) < bad}}

def remove_leftovers(paths: RunPaths) -> None:
    """What a killed writer left: temporary files and half-written checkpoint folders (never read)."""
    for leftover in paths.root.rglob(".*.tmp"):  # atomic writes' temporary files (predictions, progress, results)
        leftover.unlink(missing_ok=True)
    for leftover in paths.root.glob("checkpoints/*.partial"):  # RunPaths.checkpoint_staging
        shutil.rmtree(leftover, ignore_errors=True)

def write_predictions(path: Path, rows: list[dict[str, Any]], predictions: list[str]) -> None:
    """One JSON line per sample: its id, the model's output, and what scoring needs of the reference."""
    lines = [
        json.dumps({"question_id": row["id"], "prediction": prediction, "answers": row["answers"],
                    "task_type": row["task_type"], "metadata": json.loads(row["metadata"])}, ensure_ascii=False)
        for row, prediction in zip(rows, predictions)
    ]
    atomic_write_text(path, "\n".join(lines) + "\n")

def read_predictions(path: Path) -> tuple[list[str], list[Record]]:
    """The predictions of a file and the records (references) they answer, in file order."""
    if not path.is_file():
        raise DataError(f"predictions file {path} does not exist; the run did not evaluate that stage")
    predictions: list[str] = []
    records: list[Record] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"predictions file {path} is not UTF-8 text, as mcit-bench writes it; re-run the stage") \
            from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            predictions.append(str(entry["prediction"]))
            records.append(Record(str(entry["question_id"]), "", "", tuple(entry["answers"]), entry["task_type"],
                                  entry["metadata"]))
        except (json.JSONDecodeError, KeyError, TypeError, RecursionError):
            raise DataError(f"predictions file {path} line {number} is not a JSON object with question_id, "
                            f"prediction, answers, task_type and metadata; re-run the stage") from None
    return predictions, records
