"""Recompute a run's matrix and summary from its saved predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcit_bench.evaluate import read_predictions
from mcit_bench.io import atomic_write_json
from mcit_bench.results import matrix_from_rows, rounded
from mcit_bench.schema import load_results
from mcit_bench.scoring.continual import summarize
from mcit_bench.scoring.task_metrics import COMPANION_METRICS, score_task


def companion_scores(run_dir: Path, task_types: dict[str, str], stages: list[int]) -> dict[str, dict[str, list[float]]]:
    """Metrics reported beside the matrix (BLEU-4 of caption tasks), per task after each evaluated
    stage (stage 0, the base model, first), recomputed from the saved predictions."""
    scores: dict[str, dict[str, list[float]]] = {}
    for task, task_type in task_types.items():
        for name, scorer in COMPANION_METRICS.get(task_type, {}).items():
            values = []
            for stage in stages:
                predictions, records = read_predictions(run_dir / "predictions" / f"stage{stage}" / f"{task}.jsonl")
                values.append(round(scorer(predictions, records), 4))
            scores.setdefault(name, {})[task] = values
    return scores


def rescore_run(run_dir: Path) -> dict[str, Any]:
    """Score every saved prediction again and rewrite ``results.json``; returns the new results."""
    run_dir = Path(run_dir)
    results = load_results(run_dir / "results.json").model_dump(mode="json")
    tasks: list[str] = results["tasks"]
    metrics = {task: results["task_info"][task]["metric"] for task in tasks}

    def stage_scores(stage: int) -> dict[str, float]:
        scores = {}
        for task in tasks:
            predictions, records = read_predictions(run_dir / "predictions" / f"stage{stage}" / f"{task}.jsonl")
            scores[task], _ = score_task(metrics[task], predictions, records)
        return scores

    rows = {0: stage_scores(0)}
    next_row = 1
    for entry in results["stages"]:
        scores = stage_scores(entry["stage"])
        for _ in entry["tasks"]:
            rows[next_row] = scores
            next_row += 1
    matrix = matrix_from_rows(rows, tasks)
    results["matrix"] = [[round(v, 4) for v in row] for row in matrix.tolist()]
    results["summary"] = {name: rounded(value) for name, value in summarize(matrix).items()}
    task_types = {task: results["task_info"][task]["type"] for task in tasks}
    extra = companion_scores(run_dir, task_types, [0] + [entry["stage"] for entry in results["stages"]])
    results.pop("extra_scores", None)
    if extra:  # only runs with caption tasks carry the key
        results["extra_scores"] = extra
    atomic_write_json(run_dir / "results.json", results)
    return results
