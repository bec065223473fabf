"""Statistics over the seeds of one leaderboard key: means, sample deviations and 95% intervals of
each summary metric, the mean matrix and its stage curve."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mcit_bench.board.leaderboard import TIERS, Entry, EntryKey, Tier, entry_from_results
from mcit_bench.board.submit import verify_consistent
from mcit_bench.results.document import Results, load_results
from mcit_bench.scoring.continual import CONTINUAL_METRICS, shown_summary

# Two-sided 95% Student t quantiles by degrees of freedom; beyond the table the normal 1.96 is close.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        15: 2.131, 20: 2.086, 30: 2.042}


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
    # the weakest verification tier of the seeds (leaderboard.Tier); None when a seed has none recorded
    tier: Tier | None = None
    # the values behind key.settings (Entry.settings_values), where an entry recorded them
    settings_values: dict[str, Any] | None = None
    # the lock digest the seeds ran in ("mixed" when they differ; None: not the lock's, or not recorded)
    environment: str | None = None
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


def weakest_tier(group: list[Entry]) -> Tier | None:
    """A row is as proven as its least proven seed; a seed without a recorded tier leaves the row without one."""
    if any(entry.tier is None for entry in group):
        return None
    return max((entry.tier for entry in group if entry.tier is not None), key=TIERS.index)


def shared_environment(group: list[Entry]) -> str | None:
    found = {entry.environment for entry in group}
    return found.pop() if len(found) == 1 else "mixed"


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
            tier=weakest_tier(group), environment=shared_environment(group),
            settings_values=next((entry.settings_values for entry in group if entry.settings_values), None),
            selection_by_task=selection_by_task(group)))
    rows.sort(key=lambda row: (row.key.sort_key()[:4], -(row.metrics["final_acc"].mean
                                                         if row.metrics["final_acc"] else 0.0)))
    return rows


def consistent_results(paths: Iterable[Path]) -> list[Results]:
    """Run directories or results files, each refused unless finished and consistent (custom sequences
    included)."""
    loaded = []
    for path in paths:
        results = load_results(path)
        verify_consistent(results, str(path))
        loaded.append(results)
    return loaded


def results_entries(paths: Iterable[Path]) -> list[Entry]:
    """Entries straight from run directories or results files, custom sequences included."""
    return [entry_from_results(results) for results in consistent_results(paths)]


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
        "wall_seconds": stat_dict(row.wall_seconds), "tier": row.tier, "environment": row.environment,
        "settings_values": row.settings_values,
        "selection_by_task": row.selection_by_task} for row in rows]}
