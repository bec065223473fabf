"""The one scoring of a run: every matrix of its results from its saved predictions.

The run scores each stage with :func:`stage_scores` as soon as its predictions are written, and
scores the whole run with :func:`score_run` when it finishes; ``mcit-bench score`` and ``submit``
call :func:`score_run` on the same files. So a matrix cell has one definition everywhere: the
task's metric applied to the predictions file of that stage and task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mcit_bench.core.errors import DataError
from mcit_bench.core.io import atomic_write_json, file_digest
from mcit_bench.core.records import Record
from mcit_bench.results.document import Results, load_results, parse_results
from mcit_bench.rundir import ORACLE_PREDICTIONS, PREDICTIONS, RunPaths, predictions_path, read_predictions
from mcit_bench.scoring.continual import CONTINUAL_METRICS, summarize
from mcit_bench.scoring.published import Absent, score_published
from mcit_bench.scoring.task_metrics import COMPANION_METRICS, score_task

TaskScorer = Callable[[str, Sequence[str], Sequence[Record]], float]
PredictionsFile = Callable[[int, str], Path]


def sound_cell(metric: str, predictions: Sequence[str], records: Sequence[Record]) -> float:
    """One cell of the sound matrix: the task's own metric (``scoring/task_metrics.py``)."""
    return score_task(metric, predictions, records)[0]


def stage_scores(run_dir: Path, stage: int, metrics: dict[str, str], score: TaskScorer = sound_cell,
                 predictions_file: PredictionsFile | None = None) -> dict[str, float]:
    """Every task's score after ``stage`` (0: the base model), from that stage's saved predictions;
    ``predictions_file(stage, task)`` says which file holds them (by default the routed ones)."""
    where = predictions_file or (lambda at, task: predictions_path(run_dir, at, task))
    scores = {}
    for task, metric in metrics.items():
        predictions, records = read_predictions(where(stage, task))
        scores[task] = score(metric, predictions, records)
    return scores


def matrix_from_rows(rows: dict[int, dict[str, float]], tasks: list[str]) -> np.ndarray:
    """The (T + 1) x T matrix from {row index: {task: score}}; every row must be present."""
    missing = [index for index in range(len(tasks) + 1) if index not in rows]
    if missing:
        raise DataError(f"accuracy matrix rows {missing} are missing; the run has not finished those stages")
    return np.array([[rows[index][task] for task in tasks] for index in range(len(tasks) + 1)], dtype=float)


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def matrix_and_summary(rows: dict[int, dict[str, float]], tasks: list[str]) -> dict[str, Any]:
    """The matrix as results record it (4 decimals) and the summary computed from it."""
    matrix = matrix_from_rows(rows, tasks)
    return {"matrix": [[round(v, 4) for v in row] for row in matrix.tolist()],
            "summary": {name: rounded(value) for name, value in summarize(matrix).items()}}


def rows_of_stages(stages: list[dict[str, Any]], scores_after: Callable[[int], dict[str, float]]
                   ) -> dict[int, dict[str, float]]:
    """Matrix rows: the base model's, then one per trained task (a stage that trained several tasks,
    joint, fills one row per task with the same scores)."""
    rows = {0: scores_after(0)}
    for entry in stages:
        scores = scores_after(entry["stage"])
        for _ in entry["tasks"]:
            rows[len(rows)] = scores
    return rows


def scored_matrix(run_dir: Path, tasks: list[str], stages: list[dict[str, Any]], metrics: dict[str, str],
                  score: TaskScorer = sound_cell, predictions_file: PredictionsFile | None = None
                  ) -> dict[str, Any]:
    """A matrix and its summary, every cell scored with ``score(metric, predictions, records)``."""
    ordered = {task: metrics[task] for task in tasks}
    rows = rows_of_stages(stages, lambda stage: stage_scores(run_dir, stage, ordered, score, predictions_file))
    return matrix_and_summary(rows, tasks)


def published_matrix(run_dir: Path, tasks: list[str], stages: list[dict[str, Any]],
                     metrics: dict[str, str]) -> dict[str, Any]:
    """The as-published matrix: each source's own rule on every cell. A cell its script gives no
    score (it stops, or the file it reads is absent) is None, and ``absent`` says why; the summary
    of a matrix with an absent cell is absent too (the paper's number cannot be set beside it)."""
    absent: dict[str, str] = {}

    def cell(stage: int, task: str) -> float | None:
        predictions, records = read_predictions(predictions_path(run_dir, stage, task))
        try:
            return score_published(metrics[task], predictions, records)
        except Absent as reason:
            absent[task] = str(reason)
            return None

    rows = rows_of_stages(stages, lambda stage: {task: cell(stage, task) for task in tasks})
    if not absent:
        return {"metrics": dict(metrics), **matrix_and_summary(rows, tasks), "absent": {}}
    matrix = [[None if rows[row][task] is None else round(rows[row][task], 4) for task in tasks]
              for row in range(len(tasks) + 1)]
    return {"metrics": dict(metrics), "matrix": matrix, "summary": dict.fromkeys(CONTINUAL_METRICS),
            "absent": absent}


def companion_scores(run_dir: Path, task_types: dict[str, str], stages: list[int]) -> dict[str, dict[str, list[float]]]:
    """Metrics reported beside the matrix (BLEU-4 of caption tasks), per task after each evaluated
    stage (stage 0, the base model, first)."""
    scores: dict[str, dict[str, list[float]]] = {}
    for task, task_type in task_types.items():
        for name, scorer in COMPANION_METRICS.get(task_type, {}).items():
            values = []
            for stage in stages:
                predictions, records = read_predictions(predictions_path(run_dir, stage, task))
                values.append(round(scorer(predictions, records), 4))
            scores.setdefault(name, {})[task] = values
    return scores


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


def score_run(run_dir: Path, task_info: dict[str, dict[str, Any]], stages: list[dict[str, Any]],
              published_metrics: dict[str, str] | None) -> dict[str, Any]:
    """Every scored field of a run's results, from its saved predictions: ``matrix`` and ``summary``,
    ``prediction_digests``, and where they apply ``extra_scores`` (caption tasks), ``as_published``
    (every task names its source's rule) and ``oracle`` (a method that chose routes).

    ``task_info`` is results' (task -> type and metric, in task order); ``stages`` its stage log.
    """
    tasks = list(task_info)
    metrics = {task: info["metric"] for task, info in task_info.items()}
    scored: dict[str, Any] = scored_matrix(run_dir, tasks, stages, metrics)
    scored["prediction_digests"] = prediction_digests(run_dir, tasks, stages)
    extra = companion_scores(run_dir, {task: info["type"] for task, info in task_info.items()},
                             [0] + [entry["stage"] for entry in stages])
    if extra:
        scored["extra_scores"] = extra
    if published_metrics is not None and set(published_metrics) == set(tasks):
        scored["as_published"] = published_matrix(run_dir, tasks, stages, published_metrics)
    oracle = oracle_scores(run_dir, tasks, stages, metrics)
    if oracle is not None:
        scored["oracle"] = oracle
    return scored


SCORED_FIELDS = ("matrix", "summary", "prediction_digests", "extra_scores", "as_published", "oracle")


def saved_scoring(results: Results, run_dir: Path) -> dict[str, Any]:
    """:func:`score_run` for a results document read back from its run directory."""
    published = results.as_published.metrics if results.as_published is not None else None
    return score_run(run_dir, {task: results.task_info[task].model_dump() for task in results.tasks},
                     [stage.model_dump() for stage in results.stages], published)


def check_prediction_digests(results: Results, run_dir: Path, source: str) -> None:
    """Refuse predictions files that are not the ones the run wrote (their sha256 recorded in
    ``prediction_digests``): a prediction is what the model answered, and nothing re-scores an edited one."""
    for name, digest in results.prediction_digests.items():
        path = run_dir / PREDICTIONS / name
        if not path.is_file():
            raise DataError(f"{source}: predictions file {path} is missing; keep the whole run directory")
        if file_digest(path) != digest:
            raise DataError(f"{source}: predictions file {path} changed after the run wrote it (its sha256 "
                            f"differs from the one the run recorded); restore the file the run wrote or run the "
                            f"run again")


def check_against_predictions(results: Results, run_dir: Path, source: str) -> None:
    """Refuse results whose matrix is not what the run's saved predictions score.

    The predictions files must be the ones the run scored (their sha256 in ``prediction_digests``),
    and every cell is scored again from them. This proves the matrix and summary were not edited
    after the run; it cannot prove the predictions came from the model.
    """
    check_prediction_digests(results, run_dir, source)
    tasks = results.tasks
    rescored = saved_scoring(results, run_dir)
    for row, (stored_row, scored_row) in enumerate(zip(results.matrix, rescored["matrix"])):
        for task, stored, scored in zip(tasks, stored_row, scored_row):
            if abs(stored - scored) > 1e-4:
                when = "before training (row 0)" if row == 0 else f"after training {tasks[row - 1]} (row {row})"
                raise DataError(f"{source}: the matrix says {stored} for {task} {when}, but the saved "
                                f"predictions score {scored}; submit the results the run wrote, or re-score "
                                f"the run with 'mcit-bench score'")


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


def rescore_run(run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """Score every saved prediction again and rewrite ``results.json``; returns the new results and
    every value that changed (a results file that was edited, or scored by another version). The
    predictions must be the ones the run wrote: re-scoring never blesses an edited prediction."""
    run_dir = Path(run_dir)
    paths = RunPaths(run_dir)
    stored = load_results(paths.results)
    check_prediction_digests(stored, run_dir, str(paths.results))
    results = stored.model_dump(mode="json")
    before = {name: results.pop(name, None) or None for name in SCORED_FIELDS}  # an empty extra_scores is none
    rescored = saved_scoring(stored, run_dir)
    results.update(rescored)
    changes = [found for name in SCORED_FIELDS if name != "prediction_digests"
               for found in changed_values(before[name], rescored.get(name), name)]
    write_results(results, paths.results)
    return results, changes


def write_results(results: dict[str, Any], path: Path) -> None:
    """Validate the document (:class:`Results`) and write it whole in the schema's field order, or
    write nothing."""
    parse_results(results, str(path))
    atomic_write_json(path, {name: results[name] for name in Results.model_fields if name in results})
