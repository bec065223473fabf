"""The results file of a run: what it contains, how it is rebuilt from predictions, how it prints."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from mcit_bench.config import split_scored
from mcit_bench.core.errors import DataError
from mcit_bench.scoring.continual import DISPLAY_NAMES, shown_summary, summarize

PACKAGES = ("mcit-bench", "torch", "transformers", "peft", "accelerate", "datasets", "numpy")


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def git_state() -> dict[str, Any]:
    """The commit of the harness checkout and whether it had local changes (None outside a checkout)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True,
                                    timeout=10, check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def device_description() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def matrix_from_rows(rows: dict[int, dict[str, float]], tasks: list[str]) -> np.ndarray:
    """The (T + 1) x T matrix from {row index: {task: score}}; every row must be present."""
    missing = [index for index in range(len(tasks) + 1) if index not in rows]
    if missing:
        raise DataError(f"accuracy matrix rows {missing} are missing; the run has not finished those stages")
    return np.array([[rows[index][task] for task in tasks] for index in range(len(tasks) + 1)], dtype=float)


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


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
    split = f", scored on {split_scored(validation)}, not on test" if validation else ""
    console.print(matrix_table(matrix, tasks, labels, f"Accuracy matrix R (rows: after training stage{split})"))
    console.print(summary_table(shown_summary(summarize(matrix), bool(results["run"].get("upper_bound")))))
    for metric, by_task in results.get("extra_scores", {}).items():  # reported beside the matrix
        shown = ", ".join(f"{task} {values[-1]:.1f}" for task, values in by_task.items())
        console.print(f"{metric} after the last stage: {shown}")
    published = results.get("as_published")
    if published:  # each source's own scoring of the same predictions, to set beside its paper's table
        final = published["summary"]["final_acc"]
        shown = ", ".join(f"{task} {value:.1f}" for task, value in zip(tasks, published["matrix"][-1]))
        console.print(f"as published (the sources' own scripts), after the last stage: {shown}; final_acc "
                      f"{'n/a' if final is None else f'{final:.2f}'}", highlight=False)
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
