"""Recompute a run's matrix and summary from its saved predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcit_bench.evaluate import read_predictions
from mcit_bench.io import atomic_write_json
from mcit_bench.results import matrix_from_rows, rounded
from mcit_bench.schema import load_results
from mcit_bench.scoring.continual import summarize
from mcit_bench.scoring.task_metrics import score_task


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
    atomic_write_json(run_dir / "results.json", results)
    return results
