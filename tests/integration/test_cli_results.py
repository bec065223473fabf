"""The results commands on the command line: submit, leaderboard in every format, check, plot, schema."""

from __future__ import annotations

import copy
import json

import pytest
from typer.testing import CliRunner

from mcit_bench.board.submit import shipped_tiny_weights
from mcit_bench.cli import app
from mcit_bench.results.document import json_schema
from tests.unit.test_leaderboard import MATRIX, results_doc, write_doc

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("three_task_cut")  # the documents are a three-task cut


def invoke(*args: str):
    result = runner.invoke(app, [str(arg) for arg in args], env={"COLUMNS": "100"})
    return result, " ".join(result.output.split())


def test_submit_then_every_leaderboard_format(tmp_path):
    board = tmp_path / "board.json"
    runs = [write_doc(tmp_path, f"{seed}.json", results_doc(seed=seed)) for seed in (0, 1)]
    result, text = invoke("submit", *runs, "--leaderboard", board)
    label = f"added synth-coin@1[ci] / mcit-tiny ({shipped_tiny_weights()[:12]}) / seqft"
    assert result.exit_code == 0 and text.count(label) == 2
    result, text = invoke("leaderboard", "--leaderboard", board)
    assert result.exit_code == 0 and "seqft" in text and "50.0" in text
    for fmt, marker in (("markdown", "| sequence |"), ("csv", "final_acc_mean"), ("latex", r"\toprule"),
                        ("html", "<!DOCTYPE html>"), ("json", '"final_acc"')):
        out = tmp_path / f"board.{fmt}"
        result, _ = invoke("leaderboard", "--leaderboard", board, "--format", fmt, "--out", out)
        assert result.exit_code == 0 and marker in out.read_text()
    html = (tmp_path / "board.html").read_text()
    assert "http://" not in html and "https://" not in html.replace("https://mcit-bench", "")  # works offline


def test_submit_refusal_exits_2_and_keeps_the_file(tmp_path):
    board = tmp_path / "board.json"
    invoke("submit", write_doc(tmp_path, "a.json", results_doc()), "--leaderboard", board)
    before = board.read_bytes()
    doc = results_doc(seed=3)
    doc["summary"]["bwt"] = 0.0
    result, text = invoke("submit", write_doc(tmp_path, "b.json", doc), "--leaderboard", board)
    assert result.exit_code == 2
    assert "the summary does not match the matrix (bwt: stored 0.0 vs -30.0 from the matrix)" in text
    assert board.read_bytes() == before


def test_check_passes_equal_runs_and_fails_a_worsened_one(tmp_path):
    baseline = write_doc(tmp_path, "baseline.json", results_doc())
    result, text = invoke("check", baseline, "--against", baseline, "--tolerance", "0")
    assert result.exit_code == 0 and "ok: nothing" in text
    worse = copy.deepcopy(MATRIX)
    worse[3][1] = 20.0
    current = write_doc(tmp_path, "current.json", results_doc(matrix=worse))
    result, text = invoke("check", current, "--against", baseline, "--tolerance", "1")
    assert result.exit_code == 1
    assert "regressed" in text and "-20.00" in text
    # the cell is named, never eaten as rich markup ("R[after ...]" once printed as "R")
    task_names = results_doc()["tasks"]
    assert f"R[after {task_names[2]}, {task_names[1]}]" in " ".join(text.split())


def test_plot_writes_heatmaps_and_curves(tmp_path):
    runs = [write_doc(tmp_path, f"{seed}.json", results_doc(seed=seed)) for seed in (0, 1)]
    result, _ = invoke("plot", *runs, "--out", tmp_path / "plots")
    assert result.exit_code == 0
    written = sorted(path.name for path in (tmp_path / "plots").iterdir())
    assert written == ["heatmap-seqft-seed0.png", "heatmap-seqft-seed1.png", "stage-curves.png"]
    assert all((tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in written)


def test_plot_never_overwrites_one_run_heatmap_with_another(tmp_path):
    """Two sittings of one setting and a validation run of it, all seed 0, into one folder."""
    on_validation = results_doc()
    on_validation["run"]["config"] = {"validation": {"fraction": 0.1, "max_per_task": 100, "seed": 0}}
    runs = [write_doc(tmp_path, "a.json", results_doc()), write_doc(tmp_path, "b.json", results_doc()),
            write_doc(tmp_path, "c.json", on_validation)]
    result, _ = invoke("plot", *runs, "--out", tmp_path / "plots")
    assert result.exit_code == 0
    written = sorted(path.name for path in (tmp_path / "plots").iterdir())
    assert written == ["heatmap-seqft-seed0-2.png", "heatmap-seqft-seed0.png", "heatmap-seqft-validation-seed0.png",
                       "stage-curves.png"]


def test_committed_schema_is_current():
    from tests.conftest import FIXTURES

    committed = json.loads((FIXTURES.parents[1] / "leaderboard" / "schema.json").read_text())
    assert committed == json_schema(), "run 'mcit-bench schema' to refresh leaderboard/schema.json"
