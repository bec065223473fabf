"""Runs as pandas data frames, the same columns whether they come from results files or a leaderboard:
``cells_frame`` one row per run and matrix cell, ``runs_frame`` one row per run with its summary and
cost, ``matrix_frame`` one run's accuracy matrix with task names as index and columns."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcit_bench.scoring.continual import CONTINUAL_METRICS

if TYPE_CHECKING:
    import pandas as pd

# what names a run in every frame
IDENTITY = ("sequence", "subset", "model", "method", "protocol", "settings", "seed")
CELL_COLUMNS = (*IDENTITY, "stage", "after", "task", "score")
RUN_COLUMNS = (*IDENTITY, *CONTINUAL_METRICS, "trainable_params", "added_params", "wall_seconds")


@dataclass(frozen=True)
class FrameRun:
    """One run as the frames see it (``Results.frame_run()``, ``Entry.frame_run()``)."""

    sequence: str  # name@version
    subset: str | None
    model: str
    method: str
    protocol: str
    settings: str
    seed: int
    tasks: list[str]
    matrix: list[list[float]]
    summary: dict[str, float | None]
    trainable_params: int
    added_params: int
    wall_seconds: float

    def identity(self) -> list:
        return [getattr(self, name) for name in IDENTITY]

    def row_labels(self) -> list[str]:
        """Matrix rows: ``base`` (before training), then ``after <task>`` for each trained task."""
        return ["base"] + [f"after {task}" for task in self.tasks]


def cells_frame(runs: Iterable[FrameRun]) -> pd.DataFrame:
    """One row per run and matrix cell: the run's identity, ``stage`` (0: the base model), ``after``
    (the task just trained, or ``base``), ``task`` (the task scored) and ``score`` (0-100)."""
    import pandas as pd

    rows = [[*run.identity(), stage, label.removeprefix("after "), task, score]
            for run in runs for stage, (label, scores) in enumerate(zip(run.row_labels(), run.matrix))
            for task, score in zip(run.tasks, scores)]
    return pd.DataFrame(rows, columns=list(CELL_COLUMNS))


def runs_frame(runs: Iterable[FrameRun]) -> pd.DataFrame:
    """One row per run: its identity, every continual metric of its summary and its cost."""
    import pandas as pd

    rows = [[*run.identity(), *(run.summary.get(name) for name in CONTINUAL_METRICS), run.trainable_params,
             run.added_params, run.wall_seconds] for run in runs]
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS)).astype({name: float for name in CONTINUAL_METRICS})


def matrix_frame(run: FrameRun) -> pd.DataFrame:
    """The accuracy matrix R: index ``base``, ``after <task>``...; columns the tasks scored."""
    import pandas as pd

    return pd.DataFrame(run.matrix, index=run.row_labels(), columns=run.tasks)
