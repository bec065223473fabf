"""Continual-learning metrics: pure functions of the accuracy matrix R.

``R`` has shape (T + 1, T): row 0 is the base model before any continual training, row i the model
after training stage i, column j the (j + 1)-th task of the stream. Entries are in 0-100. With the
papers' 1-indexed notation ``R[i][j]`` (task j after stage i) is ``R[i, j - 1]`` here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ContinualMetric = Callable[[np.ndarray], float | None]


def _tasks(matrix: np.ndarray) -> int:
    rows, tasks = matrix.shape
    if rows != tasks + 1:
        raise ValueError(f"accuracy matrix must be (T + 1) x T with the base row first, got {rows} x {tasks}")
    return tasks


def final_acc(matrix: np.ndarray) -> float:
    """ACC / Last / MFN: mean score on every task after the last stage."""
    tasks = _tasks(matrix)
    return float(np.mean(matrix[tasks, :]))


def mean_finetune_acc(matrix: np.ndarray) -> float:
    """MFT: mean score on each task right after training it."""
    tasks = _tasks(matrix)
    return float(np.mean([matrix[j + 1, j] for j in range(tasks)]))


def avg_incremental_acc(matrix: np.ndarray) -> float:
    """MAA / AVG: mean over stages of the mean score on the tasks seen so far."""
    tasks = _tasks(matrix)
    return float(np.mean([np.mean(matrix[i, :i]) for i in range(1, tasks + 1)]))


def bwt(matrix: np.ndarray) -> float | None:
    """Backward transfer (Lopez-Paz & Ranzato 2017); None for a single task."""
    tasks = _tasks(matrix)
    if tasks < 2:
        return None
    return float(np.mean([matrix[tasks, j] - matrix[j + 1, j] for j in range(tasks - 1)]))


def forgetting(matrix: np.ndarray) -> float | None:
    """Average forgetting (Chaudhry et al. 2018): best earlier score minus final score."""
    tasks = _tasks(matrix)
    if tasks < 2:
        return None
    drops = [np.max(matrix[j + 1 : tasks, j]) - matrix[tasks, j] for j in range(tasks - 1)]
    return float(np.mean(drops))


def fwt(matrix: np.ndarray) -> float | None:
    """Forward transfer: score on task j before training it, minus the base model's."""
    tasks = _tasks(matrix)
    if tasks < 2:
        return None
    return float(np.mean([matrix[j, j] - matrix[0, j] for j in range(1, tasks)]))


CONTINUAL_METRICS: dict[str, ContinualMetric] = {
    "final_acc": final_acc,
    "mean_finetune_acc": mean_finetune_acc,
    "avg_incremental_acc": avg_incremental_acc,
    "bwt": bwt,
    "forgetting": forgetting,
    "fwt": fwt,
}
DISPLAY_NAMES: dict[str, str] = {
    "final_acc": "ACC (final)",
    "mean_finetune_acc": "MFT",
    "avg_incremental_acc": "MAA",
    "bwt": "BWT",
    "forgetting": "Forgetting",
    "fwt": "FWT",
}


def summarize(matrix: np.ndarray) -> dict[str, float | None]:
    """Every continual metric of the matrix."""
    return {name: metric(matrix) for name, metric in CONTINUAL_METRICS.items()}


# An upper bound's matrix repeats its one jointly trained row after every stage, so FWT would read
# that model as "the model before task j": a number, but not forward transfer. Tables show n/a.
UNDEFINED_FOR_UPPER_BOUND = frozenset({"fwt"})


def shown_summary(summary: dict[str, float | None], upper_bound: bool) -> dict[str, float | None]:
    """The summary as tables show it: the metrics an upper bound does not define become None."""
    return {name: None if upper_bound and name in UNDEFINED_FOR_UPPER_BOUND else value
            for name, value in summary.items()}
