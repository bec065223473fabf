"""PNG plots of runs: the accuracy-matrix heatmap of each run and stage-wise curves of several runs overlaid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mcit_bench.core.errors import DataError
from mcit_bench.core.io import atomic_write_bytes
from mcit_bench.results.document import Results


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def distinctions(results: Results) -> list[str]:
    """What sets a run apart from others of its method: settings other than the defaults (as the
    leaderboard keys them) and a validation split."""
    from mcit_bench.results.identity import settings_of, split_of

    settings = settings_of(results)
    return ([settings] if settings != "default" else []) + (
        ["validation split"] if split_of(results) == "validation" else [])


def run_label(results: Results) -> str:
    return f"{results.run.method} ({', '.join(distinctions(results) + [f'seed {results.run.seed}'])})"


def heatmap_path(folder: Path, results: Results, taken: set[Path]) -> Path:
    """``heatmap-<method>[-<settings>][-validation]-seed<N>.png``, numbered on where two runs would
    share a name (two sittings of one setting), so no run's heatmap overwrites another's."""
    parts = [results.run.method] + [part.replace(" split", "") for part in distinctions(results)]
    stem = "heatmap-" + "-".join(parts + [f"seed{results.run.seed}"])
    path, number = folder / f"{stem}.png", 2
    while path in taken:
        path, number = folder / f"{stem}-{number}.png", number + 1
    taken.add(path)
    return path


def _save(figure, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def heatmap_png(results: Results, path: Path) -> None:
    plt = _pyplot()
    matrix = results.matrix_array()
    tasks = results.tasks
    figure, axis = plt.subplots(figsize=(1.0 + 0.75 * len(tasks), 0.9 + 0.6 * (len(tasks) + 1)))
    image = axis.imshow(matrix, cmap="Blues", vmin=0, vmax=100, aspect="auto")
    axis.set_xticks(range(len(tasks)), tasks, rotation=40, ha="right")
    axis.set_yticks(range(len(tasks) + 1), ["base"] + [f"{i} {t}" for i, t in enumerate(tasks, start=1)])
    axis.set_xlabel("evaluated task")
    axis.set_ylabel("after training stage")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            axis.text(j, i, f"{matrix[i, j]:.0f}", ha="center", va="center", fontsize=8,
                      color="white" if matrix[i, j] > 55 else "#1d2330")
    axis.set_title(f"Accuracy matrix: {run_label(results)} on {results.run.sequence.name}", fontsize=10)
    figure.colorbar(image, ax=axis, fraction=0.04)
    _save(figure, path)
    plt.close(figure)


def stage_curves_png(runs: list[Results], path: Path) -> None:
    """Average accuracy on the tasks seen so far and on all tasks, after each stage, one line per run."""
    plt = _pyplot()
    figure, (seen_axis, all_axis) = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for results in runs:
        matrix = results.matrix_array()
        stages = np.arange(1, matrix.shape[1] + 1)
        seen = [np.mean(matrix[i, :i]) for i in stages]
        everything = [np.mean(matrix[i, :]) for i in stages]
        seen_axis.plot(stages, seen, marker="o", label=run_label(results))
        all_axis.plot(stages, everything, marker="o", label=run_label(results))
    tasks = runs[0].tasks
    for axis, title in ((seen_axis, "mean accuracy on tasks seen so far"), (all_axis, "mean accuracy on all tasks")):
        axis.set_xticks(range(1, len(tasks) + 1), tasks, rotation=40, ha="right")
        axis.set_ylim(0, 100)
        axis.grid(alpha=0.3)
        axis.set_title(title, fontsize=10)
    seen_axis.set_ylabel("accuracy")
    all_axis.legend(fontsize=8, loc="best")
    _save(figure, path)
    plt.close(figure)


def plot_runs(runs: list[tuple[Path, Results]], out_dir: Path | None) -> list[Path]:
    """A heatmap per run (beside its results unless ``out_dir``) and one overlay of the stage curves."""
    if len({tuple(results.tasks) for _, results in runs}) > 1:
        raise DataError("the runs have different task lists; overlay only runs of one sequence and subset")
    written: list[Path] = []
    taken: set[Path] = set()
    for source, results in runs:
        folder = out_dir or (source if source.is_dir() else source.parent)
        path = heatmap_path(Path(folder), results, taken)
        heatmap_png(results, path)
        written.append(path)
    curves = Path(out_dir or (runs[0][0] if runs[0][0].is_dir() else runs[0][0].parent)) / "stage-curves.png"
    stage_curves_png([results for _, results in runs], curves)
    written.append(curves)
    return written
