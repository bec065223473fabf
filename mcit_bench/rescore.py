"""Recompute a run's matrix and summary from its saved predictions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mcit_bench.core.errors import DataError
from mcit_bench.core.io import atomic_write_json, file_digest
from mcit_bench.core.records import Record
from mcit_bench.results import matrix_from_rows, rounded
from mcit_bench.rundir import ORACLE_PREDICTIONS, PREDICTIONS, predictions_path, read_predictions
from mcit_bench.schema import Results, load_results
from mcit_bench.scoring.continual import summarize
from mcit_bench.scoring.published import score_published
from mcit_bench.scoring.task_metrics import COMPANION_METRICS, score_task

TaskScorer = Callable[[str, Sequence[str], Sequence[Record]], float]
def companion_scores(run_dir: Path, task_types: dict[str, str], stages: list[int]) -> dict[str, dict[str, list[float]]]:
    """Metrics reported beside the matrix (BLEU-4 of caption tasks), per task after each evaluated
    stage (stage 0, the base model, first), recomputed from the saved predictions."""
    scores: dict[str, dict[str, list[float]]] = {}
    for task, task_type in task_types.items():
        for name, scorer in COMPANION_METRICS.get(task_type, {}).items():
            values = []
            for stage in stages:
                predictions, records = read_predictions(predictions_path(run_dir, stage, task))
                values.append(round(scorer(predictions, records), 4))
            scores.setdefault(name, {})[task] = values
    return scores


def sound_cell(metric: str, predictions: Sequence[str], records: Sequence[Record]) -> float:
    """One cell of the sound matrix: the task's own metric (``scoring/task_metrics.py``)."""
    return score_task(metric, predictions, records)[0]


PredictionsFile = Callable[[int, str], Path]


def scored_matrix(run_dir: Path, tasks: list[str], stages: list[dict[str, Any]], metrics: dict[str, str],
                  score: TaskScorer, predictions_file: PredictionsFile | None = None) -> dict[str, Any]:
    """The matrix (base row, then a row per trained task) and its summary, every cell scored again
    from the saved predictions with ``score(metric, predictions, records)``; ``predictions_file(stage,
    task)`` says which file holds a cell's predictions (by default the routed ones)."""
    where = predictions_file or (lambda stage, task: predictions_path(run_dir, stage, task))

    def stage_scores(stage: int) -> dict[str, float]:
        scores = {}
        for task in tasks:
            predictions, records = read_predictions(where(stage, task))
            scores[task] = score(metrics[task], predictions, records)
        return scores

    rows = {0: stage_scores(0)}
    for entry in stages:  # a stage that trained several tasks (joint) fills one row per task
        scores = stage_scores(entry["stage"])
        for _ in entry["tasks"]:
            rows[len(rows)] = scores
    matrix = matrix_from_rows(rows, tasks)
    return {"matrix": [[round(v, 4) for v in row] for row in matrix.tolist()],
            "summary": {name: rounded(value) for name, value in summarize(matrix).items()}}


def oracle_scores(run_dir: Path, tasks: list[str], stages: list[dict[str, Any]],
                  metrics: dict[str, str]) -> dict[str, Any] | None:
    """The matrix with every trained task routed by its true id (the oracle predictions), tasks not
    trained yet keeping their routed cell; None for a run without oracle predictions."""
    if not (run_dir / ORACLE_PREDICTIONS).is_dir():
        return None

    def oracle_or_routed(stage: int, task: str) -> Path:
        oracle = predictions_path(run_dir, stage, task, ORACLE_PREDICTIONS)
        return oracle if oracle.is_file() else predictions_path(run_dir, stage, task)

    return scored_matrix(run_dir, tasks, stages, metrics, sound_cell, oracle_or_routed)


def prediction_digests(run_dir: Path, tasks: list[str], stages: list[dict[str, Any]]) -> dict[str, str]:
    """sha256 of each predictions file behind a matrix, by its path under ``predictions/``."""
    names = [f"stage{stage}/{task}.jsonl" for stage in [0] + [entry["stage"] for entry in stages] for task in tasks]
    return {name: file_digest(run_dir / PREDICTIONS / name) for name in names}


def sound_matrix(run_dir: Path, tasks: list[str], stages: list[dict[str, Any]],
                 metrics: dict[str, str]) -> dict[str, Any]:
    """The accuracy matrix and summary scored again from the saved predictions."""
    return scored_matrix(run_dir, tasks, stages, metrics, sound_cell)


def check_against_predictions(results: Results, run_dir: Path, source: str) -> None:
    """Refuse results whose matrix is not what the run's saved predictions score.

    The predictions files must be the ones the run scored (their sha256 in ``prediction_digests``,
    when the results record them), and every cell is scored again from them. This proves the matrix
    and summary were not edited after the run; it cannot prove the predictions came from the model.
    """
    for name, digest in results.prediction_digests.items():
        path = run_dir / PREDICTIONS / name
        if not path.is_file():
            raise DataError(f"{source}: predictions file {path} is missing; submit the whole run directory")
        if file_digest(path) != digest:
            raise DataError(f"{source}: predictions file {path} is not the one the run scored (its sha256 "
                            f"differs from prediction_digests); re-run the run, or re-score it with "
                            f"'mcit-bench score' if you changed the predictions on purpose")
    tasks = results.tasks
    stages = [stage.model_dump() for stage in results.stages]
    rescored = sound_matrix(run_dir, tasks, stages, {task: results.task_info[task].metric for task in tasks})
    for row, (stored_row, scored_row) in enumerate(zip(results.matrix, rescored["matrix"])):
        for task, stored, scored in zip(tasks, stored_row, scored_row):
            if abs(stored - scored) > 1e-4:
                when = "before training (row 0)" if row == 0 else f"after training {tasks[row - 1]} (row {row})"
                raise DataError(f"{source}: the matrix says {stored} for {task} {when}, but the saved "
                                f"predictions score {scored}; submit the results the run wrote, or re-score "
                                f"the run with 'mcit-bench score'")


def published_scores(run_dir: Path, tasks: list[str], stages: list[dict[str, Any]],
                     metrics: dict[str, str]) -> dict[str, Any] | None:
    """The as-published matrix, when every task names its source's rule (None otherwise)."""
    if not tasks or set(metrics) != set(tasks):
        return None
    return {"metrics": dict(metrics), **scored_matrix(run_dir, tasks, stages, metrics, score_published)}


def changed_values(old: Any, new: Any, where: str) -> list[str]:
    """Every number or entry that differs between two decoded JSON values, as 'path: old -> new'."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [found for key in sorted(set(old) | set(new), key=str)
                for found in changed_values(old.get(key), new.get(key), f"{where}.{key}")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [found for index, (a, b) in enumerate(zip(old, new))
                for found in changed_values(a, b, f"{where}[{index}]")]
    if isinstance(old, float) and isinstance(new, float) and abs(old - new) <= 1e-6:
        return []
    return [] if old == new else [f"{where}: {old} -> {new}"]


RESCORED_FIELDS = ("matrix", "summary", "extra_scores", "as_published", "oracle")


def rescore_run(run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """Score every saved prediction again and rewrite ``results.json``; returns the new results and
    every value that changed (a results file that was edited, or scored by another version)."""
    run_dir = Path(run_dir)
    results = load_results(run_dir / "results.json").model_dump(mode="json")
    for optional in ("as_published", "oracle"):  # keys only the runs they concern carry
        if results[optional] is None:
            del results[optional]
    before = {name: results.get(name) or None for name in RESCORED_FIELDS}  # an empty extra_scores is none
    tasks: list[str] = results["tasks"]
    metrics = {task: results["task_info"][task]["metric"] for task in tasks}
    results.update(sound_matrix(run_dir, tasks, results["stages"], metrics))
    results["prediction_digests"] = prediction_digests(run_dir, tasks, results["stages"])
    task_types = {task: results["task_info"][task]["type"] for task in tasks}
    extra = companion_scores(run_dir, task_types, [0] + [entry["stage"] for entry in results["stages"]])
    results.pop("extra_scores", None)
    if extra:  # only runs with caption tasks carry the key
        results["extra_scores"] = extra
    if "as_published" in results:
        results["as_published"] = published_scores(run_dir, tasks, results["stages"],
                                                   results["as_published"]["metrics"])
    oracle = oracle_scores(run_dir, tasks, results["stages"], metrics)
    results.pop("oracle", None)
    if oracle is not None:
        results["oracle"] = oracle
    changes = [found for name in RESCORED_FIELDS
               for found in changed_values(before[name], results.get(name) or None, name)]
    atomic_write_json(run_dir / "results.json", results)
    return results, changes
