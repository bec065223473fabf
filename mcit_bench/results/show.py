"""How a run's results print: its accuracy matrix, its summary, and what is reported beside them."""

from __future__ import annotations

from typing import Any

import numpy as np

from mcit_bench.config import ValidationSplit, split_scored
from mcit_bench.scoring.continual import DISPLAY_NAMES, shown_summary, summarize


def matrix_table(matrix: np.ndarray, tasks: list[str], row_labels: list[str], title: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left", padding=(0, 1))
    table.add_column("after", style="bold", no_wrap=True, overflow="ellipsis", min_width=6)
    # on an 80-column terminal a long task name folds onto two header lines; a number is never cut
    for task in tasks:
        table.add_column(task, justify="right", min_width=5, overflow="fold")
    for label, row in zip(row_labels, matrix):
        table.add_row(label, *(f"{value:.1f}" for value in row))
    return table


def summary_table(summary: dict[str, float | None], title: str = "Summary"):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for name, value in summary.items():
        table.add_row(DISPLAY_NAMES.get(name, name), "n/a" if value is None else f"{value:.2f}")
    return table


def print_results(results: dict[str, Any], console) -> None:
    tasks = results["tasks"]
    matrix = np.array(results["matrix"], dtype=float)
    labels = ["base"] + [f"{i} {task}" for i, task in enumerate(tasks, start=1)]
    if results["run"].get("upper_bound"):
        labels = ["base"] + ["joint"] * len(tasks)
    validation = results["run"].get("config", {}).get("validation")
    split = f", scored on {split_scored(ValidationSplit.model_validate(validation))}, not on test" if validation else ""
    console.print(matrix_table(matrix, tasks, labels, f"Accuracy matrix R (rows: after training stage{split})"))
    console.print(summary_table(shown_summary(summarize(matrix), bool(results["run"].get("upper_bound")))))
    for metric, by_task in results.get("extra_scores", {}).items():  # reported beside the matrix
        shown = ", ".join(f"{task} {values[-1]:.1f}" for task, values in by_task.items())
        console.print(f"{metric} after the last stage: {shown}")
    published = results.get("as_published")
    if published:  # each source's own scoring of the same predictions, to set beside its paper's table
        final = published["summary"]["final_acc"]
        shown = ", ".join(f"{task} {'absent' if value is None else f'{value:.1f}'}"
                          for task, value in zip(tasks, published["matrix"][-1]))
        console.print(f"as published (the sources' own scripts), after the last stage: {shown}; final_acc "
                      f"{'n/a' if final is None else f'{final:.2f}'}", highlight=False, markup=False)
        for task, reason in published.get("absent", {}).items():
            console.print(f"as published, {task} is absent: {reason}", highlight=False, markup=False)
    selection = results["stages"][-1]["task_selection"]
    if selection:  # methods that find the task themselves: where the selector sends each task
        shown = ", ".join(f"{task} {value:.0f}%" for task, value in selection.items())
        console.print(f"task selection after the last stage: {shown}", highlight=False, markup=False)
    oracle = results.get("oracle")
    if oracle:  # the same checkpoints routed by the true task id: expert capacity apart from routing errors
        shown = ", ".join(f"{task} {matrix[row + 1, row]:.1f}/{oracle['matrix'][row + 1][row]:.1f}"
                          for row, task in enumerate(tasks))
        final = oracle["summary"]["final_acc"]
        console.print(f"right after training, routed/oracle: {shown}; oracle final_acc "
                      f"{'n/a' if final is None else f'{final:.2f}'}", highlight=False, markup=False)
