"""Results schema, submission checks, aggregation over seeds, regression checks and the text formats."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from mcit_bench.board.check import compare
from mcit_bench.board.leaderboard import entry_from_results, read_leaderboard
from mcit_bench.board.report import latex, markdown, rich_table, to_csv
from mcit_bench.board.stats import aggregate, stat
from mcit_bench.board.submit import shipped_tiny_weights, submit_all
from mcit_bench.core.errors import DataError
from mcit_bench.data.stream import load_stream
from mcit_bench.results.document import SCHEMA_VERSION, parse_results
from mcit_bench.scoring.continual import summarize

# A 3-task matrix with hand-computed metrics: final 50, MFT 70, MAA (80 + 65 + 50) / 3 = 65, BWT -30,
# forgetting 30, FWT ((10 - 10) + (10 - 0)) / 2 = 5.
MATRIX = [[0.0, 10.0, 0.0], [80.0, 10.0, 10.0], [60.0, 70.0, 10.0], [50.0, 40.0, 60.0]]


def summarize_rounded(matrix) -> dict:
    """The summary a run stores for ``matrix`` (4 decimals)."""
    return {name: None if value is None else round(value, 4) for name, value in summarize(np.array(matrix)).items()}


def results_doc(matrix=MATRIX, method: str = "seqft", seed: int = 0, subset: str | None = "ci") -> dict:
    """A results document as a finished run writes it, on a three-task cut of synth-coin's ci subset."""
    stream = load_stream("synth-coin", subset)
    tasks = stream.task_names[: len(matrix[0])]
    summary = summarize_rounded(matrix)
    return {
        "schema_version": SCHEMA_VERSION,
        "run": {"method": method, "method_options": {}, "config": {}, "model": "mcit-tiny",
                "model_weights": shipped_tiny_weights(), "seed": seed,
                "sequence": {"name": stream.name, "version": stream.version, "subset": subset,
                             "content_hash": stream.content_hash(), "tasks": tasks},
                "harness_version": "0.1.0", "git": {"commit": "abc", "dirty": False}, "packages": {},
                "device": "cpu", "upper_bound": False, "task_id_at_eval": True, "run_dir": "runs/x"},
        "tasks": tasks,
        "task_info": {task: {"type": "vqa", "metric": "vqa_accuracy", "like": None, "test_samples": 24}
                      for task in tasks},
        "matrix": matrix,
        "summary": summary,
        "stages": [{"stage": i + 1, "tasks": [task], "steps": 40, "train_seconds": 1.0, "final_loss": 0.5,
                    "trainable_params": 1000, "task_selection": {}} for i, task in enumerate(tasks)],
        "cost": {"trainable_params_per_stage": [1000] * len(tasks), "added_params": 1000, "total_params": 5000,
                 "train_seconds": 3.0, "wall_seconds": 10.0 + seed, "peak_memory_mb": 100.0},
    }


pytestmark = pytest.mark.usefixtures("three_task_cut")


def write_doc(folder: Path, name: str, doc: dict) -> Path:
    path = folder / name
    path.write_text(json.dumps(doc))
    return path


def test_hand_computed_summary_round_trips():
    results = parse_results(results_doc(), "doc")
    assert results.summary == {"final_acc": 50.0, "mean_finetune_acc": 70.0, "avg_incremental_acc": 65.0,
                               "bwt": -30.0, "forgetting": 30.0, "fwt": 5.0}
    assert results.summary_mismatches() == []


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda d: d["summary"].update(final_acc=75.0), "summary does not match the matrix"),
    (lambda d: d["matrix"].pop(), "matrix must be 4 x 3"),
    (lambda d: d["cost"].pop("wall_seconds"), "cost.wall_seconds"),
    (lambda d: d.update(schema_version=0), "schema_version 0, which this mcit-bench no longer reads"),
    (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "upgrade mcit-bench"),
    (lambda d: d["stages"].pop(), "trained 2 of 3 tasks"),
    (lambda d: d["run"]["sequence"].update(content_hash="0" * 64), "is not the shipped synth-coin"),
    (lambda d: d["run"]["sequence"].update(name="my-stream"), "is not one this mcit-bench ships"),
    (lambda d: d["matrix"][1].__setitem__(0, 101.0), "matrix column 0 (sqa, vqa_accuracy) must lie in 0-100"),
    (lambda d: d["run"].update(model_weights="0" * 64), "used mcit-tiny with 000000000000, not the weights"),
    # schema version 1 did not record the weights: refused, with the command that converts it
    (lambda d: d.update(schema_version=1) or d["run"].pop("model_weights"),
     "schema_version 1, which this mcit-bench no longer reads; convert it with 'mcit-bench convert"),
])
def test_bad_submission_is_refused_and_the_leaderboard_is_untouched(tmp_path, edit, reason):
    board = tmp_path / "leaderboard.json"
    submit_all([write_doc(tmp_path, "good.json", results_doc())], board)
    before = board.read_bytes()
    doc = copy.deepcopy(results_doc(seed=1))
    edit(doc)
    if "stages" in reason or "trained" in reason:
        doc["cost"]["trainable_params_per_stage"] = doc["cost"]["trainable_params_per_stage"][: len(doc["stages"])]
    with pytest.raises(DataError, match=re.escape(reason)):
        submit_all([write_doc(tmp_path, "bad.json", doc)], board)
    assert board.read_bytes() == before


def test_duplicate_and_unfinished_runs_are_refused(tmp_path):
    board = tmp_path / "leaderboard.json"
    first = write_doc(tmp_path, "a.json", results_doc())
    submit_all([first], board)
    before = board.read_bytes()
    label = f"synth-coin@1[ci] / mcit-tiny ({shipped_tiny_weights()[:12]}) / seqft (task-aware) seed 0"
    with pytest.raises(DataError, match=re.escape(f"already has {label}; submit another seed, or pass --replace")):
        submit_all([write_doc(tmp_path, "b.json", results_doc())], board)
    unfinished = tmp_path / "run"
    unfinished.mkdir()
    (unfinished / "progress.json").write_text("{}")
    with pytest.raises(DataError, match="has not finished"):
        submit_all([unfinished], board)
    # one bad run among good ones: none of them is added
    with pytest.raises(DataError):
        submit_all([write_doc(tmp_path, "c.json", results_doc(seed=5)), first], board)
    assert board.read_bytes() == before


def test_replace_swaps_the_entry_of_the_same_key_and_seed_for_the_rerun(tmp_path):
    board = tmp_path / "leaderboard.json"
    submit_all([write_doc(tmp_path, "a.json", results_doc()), write_doc(tmp_path, "b.json", results_doc(seed=1))],
               board)
    rerun = results_doc(matrix=[[0.0, 10.0, 0.0], [90.0, 10.0, 10.0], [70.0, 70.0, 10.0], [60.0, 40.0, 60.0]])
    [entry] = submit_all([write_doc(tmp_path, "rerun.json", rerun)], board, replace=True)
    entries = read_leaderboard(board).entries
    assert sorted(e.seed for e in entries) == [0, 1]
    assert next(e for e in entries if e.seed == 0).matrix == rerun["matrix"] == entry.matrix
    # two runs of the same key and seed in one submission are still refused, and nothing is written
    before = board.read_bytes()
    with pytest.raises(DataError, match="these submissions have .* seed 0; submit another seed$"):
        submit_all([write_doc(tmp_path, "c.json", rerun), write_doc(tmp_path, "d.json", rerun)], board, replace=True)
    assert board.read_bytes() == before


def test_leaderboard_layout_is_sorted_and_stable(tmp_path):
    board = tmp_path / "leaderboard.json"
    docs = [results_doc(method="replay", seed=1), results_doc(method="ewc", seed=0),
            results_doc(method="replay", seed=0)]
    submit_all([write_doc(tmp_path, f"{i}.json", doc) for i, doc in enumerate(docs)], board)
    entries = read_leaderboard(board).entries
    assert [(e.key.method, e.seed) for e in entries] == [("ewc", 0), ("replay", 0), ("replay", 1)]
    text = board.read_text()
    assert text.endswith("\n") and text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_seed_statistics_by_hand():
    # values 50, 54, 58: mean 54, sample std 4, CI half-width t(0.975, 2) * 4 / sqrt(3) = 4.303 * 2.3094
    summary = stat([50.0, 54.0, 58.0])
    assert summary.mean == pytest.approx(54.0)
    assert summary.std == pytest.approx(4.0)
    assert summary.ci95 == pytest.approx(4.303 * 4 / np.sqrt(3), rel=1e-6)
    assert stat([7.0]).std == 0.0 and stat([]) is None


def test_aggregate_groups_seeds_and_averages_matrices(tmp_path):
    other = [[0.0, 10.0, 0.0], [90.0, 10.0, 10.0], [70.0, 80.0, 10.0], [60.0, 50.0, 70.0]]  # final 60
    board = tmp_path / "leaderboard.json"
    submit_all([write_doc(tmp_path, "a.json", results_doc(seed=0)),
                write_doc(tmp_path, "b.json", results_doc(matrix=other, seed=1))], board)
    (row,) = aggregate(read_leaderboard(board).entries)
    assert row.seeds == [0, 1]
    assert row.metrics["final_acc"].mean == pytest.approx(55.0)
    assert row.metrics["final_acc"].std == pytest.approx(np.std([50, 60], ddof=1))
    assert row.matrix[3] == [55.0, 45.0, 65.0]
    assert row.stage_curve == [85.0, 70.0, 55.0]
    assert "55.0 ± 7.1" in markdown([row])
    assert "55.0$\\pm$7.1" in latex([row])
    header, line = to_csv([row]).splitlines()
    values = dict(zip(header.split(","), line.split(","), strict=True))
    assert values["final_acc_mean"] == "55.0000" and values["seeds"] == "0 1"
    # results files submitted without their run directories: neither seed was re-scored
    assert row.tier == "unverified" and values["tier"] == "unverified"
    assert markdown([row]).rstrip().endswith("| unverified | – |")  # tier, then the environment: not recorded
    assert "seqft\\textsuperscript{\\textdagger} &" in latex([row])
    from rich.console import Console

    console = Console(width=100, record=True)
    console.print(rich_table([row]))
    shown = console.export_text()
    assert " 2* " in shown
    assert "* some seeds were not checked against the stream's test split" in " ".join(shown.split())


def test_an_upper_bound_shows_no_forward_transfer(tmp_path):
    joint_row = [70.0, 60.0, 50.0]
    doc = results_doc(matrix=[[0.0, 10.0, 0.0]] + [joint_row] * 3, method="joint")
    doc["run"]["upper_bound"] = True
    doc["stages"] = [{**doc["stages"][0], "tasks": doc["tasks"]}]
    doc["cost"]["trainable_params_per_stage"] = [1000]
    assert doc["summary"]["fwt"] == pytest.approx(((60 - 10) + (50 - 0)) / 2)  # the repeated row, not transfer
    board = tmp_path / "leaderboard.json"
    submit_all([write_doc(tmp_path, "joint.json", doc), write_doc(tmp_path, "seqft.json", results_doc())], board)
    rows = {row.key.protocol: row for row in aggregate(read_leaderboard(board).entries)}
    assert rows["upper-bound"].metrics["fwt"] is None and rows["upper-bound"].metrics["final_acc"].mean == 60.0
    assert rows["task-aware"].metrics["fwt"].mean == pytest.approx(5.0)
    header, _, line = markdown([rows["upper-bound"]]).splitlines()
    cells = dict(zip(header.split("|"), line.split("|"), strict=True))
    assert cells[" FWT "] == " – " and cells[" ACC "] == " 60.0 "


def test_check_flags_worsened_cells_and_metrics():
    baseline = parse_results(results_doc(), "baseline")
    worse_matrix = copy.deepcopy(MATRIX)
    worse_matrix[3][0] = 40.0  # task 1 after the last stage drops 10 points
    worse = parse_results(results_doc(matrix=worse_matrix), "current")
    regressions, moved = compare(worse, baseline, tolerance=2.0)
    regressed = {change.what for change in regressions}
    # final_acc -3.3, BWT -5, forgetting +5 move beyond 2; MAA moves only 1.1
    assert regressed == {"final_acc", "bwt", "forgetting", f"R[after {baseline.tasks[2]}, {baseline.tasks[0]}]"}
    assert compare(baseline, baseline, tolerance=0.0) == ([], [])
    # an improvement moves but does not regress
    better_matrix = copy.deepcopy(MATRIX)
    better_matrix[3][0] = 70.0
    regressions, moved = compare(parse_results(results_doc(matrix=better_matrix), "c"), baseline, tolerance=2.0)
    assert regressions == [] and moved



def test_check_refuses_runs_scored_on_different_splits():
    baseline = parse_results(results_doc(), "baseline")
    on_validation = results_doc()
    on_validation["run"]["config"] = {"validation": {"fraction": 0.1, "max_per_task": 100, "seed": 0}}
    with pytest.raises(DataError, match=r"the runs are scored on different samples \(a validation split carved "
                                        r"from the training data \(0.1 of each task's, at most 100, seed 0\) "
                                        r"against the test split\)"):
        compare(parse_results(on_validation, "current"), baseline, tolerance=2.0)


def test_a_write_killed_half_way_leaves_the_old_leaderboard(tmp_path, monkeypatch):
    board = tmp_path / "leaderboard.json"
    submit_all([write_doc(tmp_path, "a.json", results_doc())], board)
    before = board.read_bytes()

    def killed(*args, **kwargs):  # the process dies between writing the temporary file and the rename
        raise KeyboardInterrupt

    monkeypatch.setattr("mcit_bench.core.io.os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        submit_all([write_doc(tmp_path, "b.json", results_doc(seed=1))], board)
    assert board.read_bytes() == before
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".leaderboard")] == []


def test_weights_fingerprint_hashes_names_and_bytes_of_the_safetensors(tmp_path):
    import hashlib

    from mcit_bench.core.io import weights_fingerprint

    assert weights_fingerprint(tmp_path) is None  # no safetensors: a fingerprint would claim too much
    (tmp_path / "b.safetensors").write_bytes(b"second")
    (tmp_path / "a.safetensors").write_bytes(b"first")
    (tmp_path / "config.json").write_text("{}")  # not part of the weights
    expected = hashlib.sha256(b"a.safetensors" b"first" b"b.safetensors" b"second").hexdigest()
    assert weights_fingerprint(tmp_path) == expected
    assert weights_fingerprint(tmp_path / "missing") is None


def test_matrix_table_keeps_every_number_whole_on_an_80_column_terminal():
    from rich.console import Console

    from mcit_bench.results.show import matrix_table

    stream = load_stream("synth-coin")
    tasks = stream.task_names
    matrix = np.full((len(tasks) + 1, len(tasks)), 100.0)
    labels = ["base"] + [f"{i + 1} {task}" for i, task in enumerate(tasks)]
    console = Console(width=80, record=True)
    console.print(matrix_table(matrix, tasks, labels, "R"))
    lines = console.export_text().splitlines()
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) == len(tasks) + 1
    assert all(line.count("100.0") == len(tasks) and len(line) <= 80 for line in rows)
    assert "6 grounding" in "\n".join(rows)


def test_entries_are_keyed_by_the_weights_and_a_converted_version_1_board_reads_them_as_unknown(tmp_path):
    from typer.testing import CliRunner

    from mcit_bench.cli import app

    board = tmp_path / "leaderboard.json"
    submit_all([write_doc(tmp_path, "a.json", results_doc()), write_doc(tmp_path, "b.json", results_doc(seed=1))],
               board)
    data = json.loads(board.read_text())
    assert data["leaderboard_version"] == 3
    assert {entry["key"]["model_weights"] for entry in data["entries"]} == {shipped_tiny_weights()}
    # a board written before keys named the weights (version 1) is refused until converted; then its
    # entries are of unknown weights, so they never average with the seeds of the shipped mcit-tiny
    old = copy.deepcopy(data)
    for entry in old["entries"]:
        del entry["key"]["model_weights"], entry["tier"]
        entry["seed"] += 10
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps({"leaderboard_version": 1, "entries": old["entries"]}))
    with pytest.raises(DataError, match=re.escape(f"leaderboard {mixed} has leaderboard_version 1, which this "
                                                  f"mcit-bench no longer reads; convert it with 'mcit-bench "
                                                  f"convert {mixed}'")):
        read_leaderboard(mixed)
    # and a results file of version 1 the same way; converted, it is still no run on the shipped weights
    run_v1 = results_doc(seed=2)
    run_v1["schema_version"] = 1
    del run_v1["run"]["model_weights"]
    results_v1 = write_doc(tmp_path, "v1.json", run_v1)
    done = CliRunner().invoke(app, ["convert", str(mixed), str(results_v1)])
    assert done.exit_code == 0, done.output
    assert "version 1 -> leaderboard_version 3" in done.output and "version 1 -> schema_version 3" in done.output
    assert json.loads(results_v1.read_text())["run"]["model_weights"] is None
    with pytest.raises(DataError, match="used mcit-tiny with weights it did not record"):
        submit_all([results_v1], board)
    entries = read_leaderboard(mixed).entries + read_leaderboard(board).entries
    rows = aggregate(entries)
    by_weights = {row.key.model_weights: row.seeds for row in rows}
    assert by_weights == {None: [10, 11], shipped_tiny_weights(): [0, 1]}
    (tmp_path / "v4.json").write_text(json.dumps({"leaderboard_version": 4, "entries": []}))
    with pytest.raises(DataError, match=re.escape("has leaderboard_version 4; this mcit-bench reads version 3")):
        read_leaderboard(tmp_path / "v4.json")
    refused = CliRunner().invoke(app, ["convert", str(tmp_path / "v4.json")])
    assert refused.exit_code == 2
    assert "leaderboard_version 4, which no version of mcit-bench wrote before 3; it cannot be converted" in \
        " ".join(refused.output.split())


def test_a_version_2_board_converts_its_verified_flags_to_tiers(tmp_path):
    """Version 2's ``verified: true`` was a re-scoring from predictions whose references came from the
    predictions themselves: self-checked, not verified. False was a results file alone; null unknown."""
    from mcit_bench.board.leaderboard import convert_leaderboard

    board = tmp_path / "leaderboard.json"
    submit_all([write_doc(tmp_path, f"{seed}.json", results_doc(seed=seed)) for seed in range(3)], board)
    data = json.loads(board.read_text())
    for entry, verified in zip(data["entries"], (True, False, None)):
        del entry["tier"]
        entry["verified"] = verified
    board.write_text(json.dumps({**data, "leaderboard_version": 2}))
    assert convert_leaderboard(board) == 2
    assert [entry.tier for entry in read_leaderboard(board).entries] == ["self-checked", "unverified", None]
    (row,) = aggregate(read_leaderboard(board).entries)
    assert row.tier is None  # a seed of unknown tier leaves the row unknown, never the stronger tiers
    assert markdown([row]).rstrip().endswith("| – | – |")  # tier and environment, the last columns


def test_submissions_must_name_the_sequences_own_tasks(tmp_path):
    board = tmp_path / "leaderboard.json"
    with pytest.raises(DataError, match=r"tasks \['sqa', 'textvqa', 'imagenet'\] are not synth-coin's own"):
        submit_all([write_doc(tmp_path, "cut.json", results_doc())], board)
    assert not board.exists()


def _submit_one(path: str, board: str) -> None:
    submit_all([Path(path)], Path(board))


def test_twenty_concurrent_submits_lose_no_entry(tmp_path):
    import multiprocessing

    board = tmp_path / "leaderboard.json"
    paths = [write_doc(tmp_path, f"{seed}.json", results_doc(seed=seed)) for seed in range(20)]
    context = multiprocessing.get_context("fork")  # the children share this test's imports (and its three-task cut)
    workers = [context.Process(target=_submit_one, args=(str(path), str(board))) for path in paths]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0] * 20
    assert sorted(entry.seed for entry in read_leaderboard(board).entries) == list(range(20))
    json.loads(board.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the board"))


@pytest.mark.parametrize("text,reason", [
    (lambda doc: json.dumps(doc).replace('"wall_seconds": 11.0', '"wall_seconds": Infinity'), "holds Infinity"),
    (lambda doc: json.dumps(doc).replace("80.0", "NaN", 1), "holds NaN"),
    (lambda doc: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (lambda doc: json.dumps({**doc, "tasks": ["t"] * 1000}), "names 1000 tasks"),
    (lambda doc: json.dumps({**doc, "run": {**doc["run"], "method": "<img src=x onerror=alert(1)>"}}),
     "is not a method name"),
    (lambda doc: json.dumps({**doc, "run": {**doc["run"], "method": "nosuchmethod"}}), "is not registered here"),
    (lambda doc: json.dumps({**doc, "run": {**doc["run"], "model": "=HYPERLINK(\"x\")"}}),
     "holds characters a model id does not"),
])
def test_pathological_submissions_leave_the_board_byte_identical(tmp_path, text, reason):
    board = tmp_path / "leaderboard.json"
    submit_all([write_doc(tmp_path, "good.json", results_doc())], board)
    before = board.read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_text(text(results_doc(seed=1)))
    with pytest.raises(DataError, match=re.escape(reason)):
        submit_all([bad], board)
    assert board.read_bytes() == before


def test_non_finite_numbers_are_refused_with_the_field_named(tmp_path):
    from mcit_bench.board.submit import verify_consistent

    doc = results_doc()
    doc["cost"]["wall_seconds"] = float("inf")
    with pytest.raises(DataError, match=r"field cost.wall_seconds \(inf\) is not a finite number"):
        verify_consistent(parse_results(doc, "doc"), "doc")


def test_submit_keeps_the_boards_file_mode(tmp_path):
    board = tmp_path / "leaderboard.json"
    submit_all([write_doc(tmp_path, "a.json", results_doc())], board)
    board.chmod(0o644)
    submit_all([write_doc(tmp_path, "b.json", results_doc(seed=1))], board)
    assert board.stat().st_mode & 0o777 == 0o644


def hostile_rows():
    """Rows whose names carry HTML, LaTeX, Markdown and spreadsheet syntax (a hand-edited board)."""
    from mcit_bench.board.leaderboard import entry_from_results

    doc = results_doc()
    doc["run"]["method"] = "a|b\n<b>x</b>"
    doc["run"]["model"] = "=cmd|' /C calc'!A0 \\input{/etc/passwd} ^~ [x](https://e.example) ![](https://e.example/i)"
    return aggregate([entry_from_results(parse_results(doc, "doc"))])


def test_every_text_format_escapes_what_it_prints():
    rows = hostile_rows()
    table = markdown(rows).splitlines()
    assert all(line.count("|") - line.count("\\|") == len(table[0].split("|")) - 1 for line in table)
    assert "<b>" not in markdown(rows) and "\\<b\\>x\\</b\\>" in markdown(rows)
    # no live link or image: the brackets are escaped
    assert "[x](" not in markdown(rows) and "\\[x\\](https://e.example) !\\[\\](https://e.example/i)" in markdown(rows)
    model_cell = next(csv_row for csv_row in to_csv(rows).splitlines()[1:]).split(",")
    assert any(cell.startswith("\"'=cmd") or cell.startswith("'=cmd") for cell in model_cell)
    tex = latex(rows)
    assert r"a|b <b>x</b>" not in tex or r"\input" not in tex
    assert "\\input{" not in tex and "^" not in tex.replace(r"\textasciicircum{}", "")
    from mcit_bench.board.report import _latex_escape

    assert _latex_escape("\\input{/etc/passwd} a_b ^~") == (r"\textbackslash{}input\{/etc/passwd\} a\_b "
                                                            r"\textasciicircum{}\textasciitilde{}")


def test_selecting_methods_show_selection_per_task_and_the_oracle_diagonal():
    from rich.console import Console

    from mcit_bench.board.leaderboard import entry_from_results
    from mcit_bench.board.stats import board_summary
    from mcit_bench.results.show import print_results

    docs = [results_doc(seed=seed) for seed in (0, 1)]
    tasks = docs[0]["tasks"]
    for doc, shares in zip(docs, ([100.0, 50.0, 80.0], [90.0, 70.0, 80.0])):
        doc["stages"][-1]["task_selection"] = dict(zip(tasks, shares))
    (row,) = aggregate(entry_from_results(parse_results(doc, "doc")) for doc in docs)
    assert row.selection_by_task == {tasks[0]: 95.0, tasks[1]: 60.0, tasks[2]: 80.0}
    assert board_summary([row])["rows"][0]["selection_by_task"] == row.selection_by_task

    oracle = copy.deepcopy(MATRIX)
    oracle[1][0], oracle[2][1] = 90.0, 75.0  # the selector lost 10 and 5 points right after training
    docs[0]["oracle"] = {"matrix": oracle, "summary": summarize_rounded(oracle)}
    console = Console(width=200, record=True)
    print_results(docs[0], console)
    shown = " ".join(console.export_text().split())
    assert (f"right after training, routed/oracle: {tasks[0]} 80.0/90.0, {tasks[1]} 70.0/75.0, "
            f"{tasks[2]} 60.0/60.0") in shown
    assert f"task selection after the last stage: {tasks[0]} 100%, {tasks[1]} 50%, {tasks[2]} 80%" in shown


def test_hand_set_options_or_training_settings_get_their_own_settings_key():
    def entry(config: dict):
        doc = results_doc()
        doc["run"]["config"] = config
        return entry_from_results(parse_results(doc, "results.json"))

    def key(config: dict) -> str:
        return entry(config).key.settings

    assert key({}) == "default"
    # training settings equal to the defaults are the defaults
    assert key({"training": {"lr": 1e-3, "batch_size": 32}, "method_options": {}}) == "default"
    hand = {"method_options": {"ewc_lambda": 3e4}, "training": {"lr": 2e-3}}
    digest = hashlib.sha256(json.dumps(hand, sort_keys=True).encode()).hexdigest()[:12]
    given = {"training": {"lr": 2e-3, "batch_size": 32}, "method_options": {"ewc_lambda": 3e4}}
    assert key(given) == f"custom-{digest}"
    tuned = {"tuned": {"study": "tune-seed0", "trials": 8, "best_trial": 3, "validation_final_acc": 61.0,
                       "params": {"training.lr": 2e-3}}, "training": {"lr": 2e-3}}
    assert key(tuned).startswith("tuned-")  # a study's choice is named by the study, not as hand-set
    # every entry keeps the values its digest names, for views to show beside the tag
    assert [entry(config).settings_values for config in ({}, given, tuned)] == [None, hand, {"training.lr": 2e-3}]
    # a per-stage schedule (the plasticity protocol's) is a setting of its own, never the default
    schedule = {"stage_options": {"2": {"ewc_lambda": 500.0}}}
    digest = hashlib.sha256(json.dumps(schedule, sort_keys=True).encode()).hexdigest()[:12]
    assert key(schedule) == f"custom-{digest}"


def test_a_run_scored_on_validation_never_averages_with_test_runs():
    """The same settings scored on a validation split (a tuning trial, a run config with ``validation``)
    form their own row, labelled so; every key names its split."""
    on_test = results_doc(seed=0)
    on_validation = results_doc(matrix=[[0.0, 0.0, 0.0], [90.0, 0.0, 0.0], [90.0, 90.0, 0.0], [90.0, 90.0, 90.0]],
                                seed=1)
    on_validation["run"]["config"] = {"validation": {"fraction": 0.1, "max_per_task": 100, "seed": 0}}
    entries = [entry_from_results(parse_results(doc, "results.json")) for doc in (on_test, on_validation)]
    assert [entry.key.split for entry in entries] == ["test", "validation"]
    assert entries[0].key.model_dump()["split"] == "test" and entries[1].key.model_dump()["split"] == "validation"
    rows = aggregate(entries)
    assert sorted((row.key.protocol_label(), row.metrics["final_acc"].mean) for row in rows) == [
        ("task-aware", 50.0), ("task-aware, validation split", 90.0)]

    from rich.console import Console

    from mcit_bench.results.show import print_results

    console = Console(width=200, record=True)
    print_results(on_validation, console)
    assert ("scored on a validation split carved from the training data (0.1 of each task's, at most 100, seed 0), "
            "not on test") in " ".join(console.export_text().split())


def test_plot_labels_tell_settings_and_splits_apart():
    from mcit_bench.board.plots import run_label

    doc = results_doc(seed=2)
    assert run_label(parse_results(doc, "r")) == "seqft (seed 2)"
    doc["run"]["config"] = {"method_options": {"lora_rank": 8},
                            "validation": {"fraction": 0.1, "max_per_task": 100, "seed": 0}}
    digest = hashlib.sha256(json.dumps({"method_options": {"lora_rank": 8}}, sort_keys=True).encode()).hexdigest()[:12]
    assert run_label(parse_results(doc, "r")) == f"seqft (custom-{digest}, validation split, seed 2)"


def test_an_absent_as_published_cell_validates_only_with_its_reason_and_prints_as_absent():
    from rich.console import Console

    from mcit_bench.results.show import print_results

    doc = results_doc()
    tasks = doc["tasks"]
    doc["as_published"] = {"metrics": dict.fromkeys(tasks, "coin_imagenet"),
                           "matrix": [[10.0, 20.0, None] for _ in range(4)],
                           "summary": dict.fromkeys(doc["summary"]),
                           "absent": {tasks[2]: "its script stops"}}
    parse_results(doc, "results.json")
    console = Console(record=True, width=200)
    print_results(doc, console)
    shown = " ".join(console.export_text().split())
    assert f"{tasks[2]} absent; final_acc n/a" in shown and f"as published, {tasks[2]} is absent: its script stops" \
        in shown
    doc["as_published"]["absent"] = {}
    with pytest.raises(DataError, match=re.escape(f"as_published.matrix has absent cells of ['{tasks[2]}'] that "
                                                  f"as_published.absent does not explain")):
        parse_results(doc, "results.json")


@pytest.mark.parametrize("text,message", [
    ('{"leaderboard_version": 2, "entries": [{"seed": NaN}]}', "holds NaN, which is not a JSON number"),
    ("[" * 20000 + "]" * 20000, "is nested too deeply to be a leaderboard of mcit-bench"),
])
def test_a_leaderboard_that_is_no_json_board_is_refused_in_one_sentence(tmp_path, text, message):
    board = tmp_path / "leaderboard.json"
    board.write_text(text)
    with pytest.raises(DataError, match=re.escape(message)):
        read_leaderboard(board)
    assert board.read_text() == text
