"""The Python API (issue 33): the frames' documented columns and values on hand-computed documents,
refusals as the command line's exception classes, and the example script that compares methods."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mcit_bench as mb
from mcit_bench.board.leaderboard import entry_from_results
from mcit_bench.board.stats import aggregate
from mcit_bench.results.frames import CELL_COLUMNS, RUN_COLUMNS
from tests.unit.test_leaderboard import MATRIX, results_doc, write_doc

REPO = Path(__file__).resolve().parents[2]


def test_frames_of_runs_have_the_documented_columns_and_the_matrix_values(tmp_path):
    other = [[0.0, 10.0, 0.0], [90.0, 10.0, 10.0], [70.0, 80.0, 10.0], [60.0, 50.0, 70.0]]
    for seed, matrix in ((0, MATRIX), (1, other)):
        (tmp_path / f"seed{seed}").mkdir()
        write_doc(tmp_path / f"seed{seed}", "results.json", results_doc(matrix=matrix, seed=seed))
    runs = mb.load_results(str(tmp_path / "seed*"))
    assert [results.run.seed for results in runs] == [0, 1]
    cells = runs.to_pandas()
    assert list(cells.columns) == list(CELL_COLUMNS) and len(cells) == 2 * 4 * 3
    tasks = runs[0].tasks
    one = cells[(cells["seed"] == 1) & (cells["stage"] == 2) & (cells["task"] == tasks[1])]
    assert one[["after", "score"]].values.tolist() == [[tasks[1], 80.0]]
    assert cells[cells["stage"] == 0]["after"].unique().tolist() == ["base"]
    summary = runs.runs_frame()
    assert list(summary.columns) == list(RUN_COLUMNS)
    assert summary["final_acc"].tolist() == [runs[0].summary["final_acc"], 60.0]
    # the frames agree with the leaderboard's own statistics over seeds
    [row] = aggregate([entry_from_results(results) for results in runs])
    assert summary["final_acc"].mean() == pytest.approx(row.metrics["final_acc"].mean)
    matrix = runs[1].matrix_frame()
    assert matrix.index.tolist() == ["base"] + [f"after {task}" for task in tasks]
    assert matrix.columns.tolist() == tasks and np.array_equal(matrix.values, np.array(other))


def test_leaderboard_frames_hold_every_entry():
    board = mb.leaderboard(REPO / "leaderboard" / "leaderboard.json")
    cells, summary = board.to_pandas(), board.runs_frame()
    assert len(summary) == len(board.entries)
    assert len(cells) == sum(len(entry.matrix) * len(entry.tasks) for entry in board.entries)
    first = board.entries[0]
    mine = summary[(summary["method"] == first.key.method) & (summary["settings"] == first.key.settings)
                   & (summary["seed"] == first.seed)]
    assert mine["final_acc"].tolist() == [first.summary["final_acc"]]


def test_refusals_are_the_command_lines_exception_classes(tmp_path):
    with pytest.raises(mb.ConfigError, match=f"no run directory or results file matches {tmp_path}/none"):
        mb.load_results(str(tmp_path / "none*"))
    with pytest.raises(mb.ConfigError, match="no run directory or results file matches"):
        mb.load_results(tmp_path / "missing")
    with pytest.raises(mb.ConfigError, match="leaderboard file .* does not exist"):
        mb.leaderboard(tmp_path / "none.json")
    with pytest.raises(mb.ConfigError, match="unknown method 'nosuch'"):
        mb.run("nosuch", output=tmp_path)
    with pytest.raises(mb.ConfigError, match="nosuch-stream"):
        mb.run("seqft", "nosuch-stream", output=tmp_path)
    with pytest.raises(mb.ConfigError, match="nope"):
        mb.run("seqft", options={"nope": 1}, output=tmp_path)
    with pytest.raises(mb.ConfigError, match=r"mcit_bench.run\(\) field training.learning_rate"):
        mb.run("seqft", training={"learning_rate": 1e-3}, output=tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{")
    with pytest.raises(mb.DataError):
        mb.load_results(tmp_path / "broken")
    assert issubclass(mb.ConfigError, mb.UserError) and issubclass(mb.DataError, mb.UserError)
    assert not list(tmp_path.glob("*/*/*"))  # nothing was written


def test_the_example_compares_methods_from_the_shipped_leaderboard(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "docs" / "examples" / "compare_methods.py"),
                           str(tmp_path / "curves.png")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = mb.leaderboard(REPO / "leaderboard" / "leaderboard.json").runs_frame()
    tuned = summary[summary["settings"].str.startswith("tuned-") & summary["subset"].isna()]
    seqft = tuned[tuned["method"] == "seqft"]["final_acc"]
    printed = next(line for line in done.stdout.splitlines() if line.startswith("seqft")).split()
    assert [float(value) for value in printed[1:3]] == pytest.approx([seqft.mean(), seqft.std()], abs=0.05 + 1e-9)
    assert (tmp_path / "curves.png").stat().st_size > 10_000
