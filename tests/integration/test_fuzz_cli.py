"""The options of every command, fuzzed (issue 30): whatever values a user types, a command ends in a
refusal (non-zero exit, no traceback) or gets as far as training, which is stopped here before it
starts (the engine's ``run_stream`` and the tuning protocols are replaced by a stub). The last-resort
bug handler never fires: no exception but a refusal leaves a command. Fixed seeds and budgets."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from typer.testing import CliRunner

import mcit_bench.engine.run as engine_run
import mcit_bench.tune as tune_package
from mcit_bench.cli import app
from mcit_bench.methods.registry import METHODS
from tests.conftest import FIXTURES, fuzz_settings


class ReachedTraining(Exception):
    """What the stubbed engine raises: the command accepted its input and would train now."""


def stop(*args, **kwargs):
    raise ReachedTraining


ODD_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "[b]x[/b]", "../..", "-1", "1e30", "nan", "0,,1",
                                                             "fsdp", "ci", "bf16", "synth-coin", "lr=inf",
                                                             "lora_rank=0", "x=y=z", "\x00"]))
NUMBERS = st.one_of(st.integers(min_value=-2**66, max_value=2**66).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(lambda x: "nan" if math.isnan(x) else repr(x)))
VALUES = {
    "--method": st.one_of(st.sampled_from(METHODS.names()), ODD_TEXT),
    "--sequence": st.one_of(st.just("synth-coin"), ODD_TEXT),
    "--subset": st.one_of(st.just("ci"), ODD_TEXT),
    "--variant": ODD_TEXT,
    "--model": st.one_of(st.just("mcit-tiny"), ODD_TEXT),
    "--seed": st.one_of(NUMBERS, ODD_TEXT),
    "--seeds": st.one_of(st.just("0,1"), ODD_TEXT, NUMBERS),
    "--steps-per-task": st.one_of(NUMBERS, ODD_TEXT),
    "--batch-size": st.one_of(NUMBERS, ODD_TEXT),
    "--grad-accum": NUMBERS,
    "--lr": st.one_of(NUMBERS, ODD_TEXT),
    "--max-length": NUMBERS,
    "--precision": st.one_of(st.sampled_from(["fp32", "bf16"]), ODD_TEXT),
    "--shard": ODD_TEXT,
    "--option": ODD_TEXT,
    "--run-id": ODD_TEXT,
    "--trials": st.one_of(NUMBERS, ODD_TEXT),
    "--margin": NUMBERS,
    "--decay": NUMBERS,
    "--protocol": st.one_of(st.sampled_from(["plasticity", "equal-budget"]), ODD_TEXT),
    "--validation-fraction": NUMBERS,
    "--validation-max": NUMBERS,
    "--tolerance": NUMBERS,
    "--format": ODD_TEXT,
}
COMMANDS = {
    "run": ["--method", "--sequence", "--subset", "--variant", "--model", "--seed", "--seeds", "--steps-per-task",
            "--batch-size", "--grad-accum", "--lr", "--max-length", "--precision", "--shard", "--option", "--run-id"],
    "tune": ["--method", "--sequence", "--subset", "--seed", "--trials", "--protocol", "--margin", "--decay",
             "--validation-fraction", "--validation-max", "--option", "--steps-per-task", "--batch-size"],
    "leaderboard": ["--format", "--method", "--sequence", "--subset"],
}


def one_sentence(output: str) -> bool:
    """A refusal's whole output: one line, 'error: ...' (a long one wraps only where the terminal does)."""
    lines = [line for line in output.splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("error: ")


def arguments(command: str):
    names = COMMANDS[command]
    pairs = st.lists(st.sampled_from(names).flatmap(lambda name: st.tuples(st.just(name), VALUES[name])),
                     max_size=6)
    return pairs.map(lambda chosen: [part for pair in chosen for part in pair])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_any_option_values_end_in_a_refusal_or_in_training(command, tmp_path, monkeypatch):
    monkeypatch.setattr(engine_run, "run_stream", stop)
    monkeypatch.setattr(tune_package, "tune", stop)
    monkeypatch.setattr(tune_package, "plasticity_protocol", stop)
    runner = CliRunner()
    outputs = ["--output", str(tmp_path / "runs")] if command in ("run", "tune") else []

    @fuzz_settings(60, HealthCheck.function_scoped_fixture)
    @given(arguments(command))
    def check(args):
        result = runner.invoke(app, [command, *args, *outputs])
        if isinstance(result.exception, ReachedTraining):
            return
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
        assert "Traceback" not in result.output, args
        assert result.exit_code in (0, 2), (args, result.exit_code, result.output[-500:])
        if result.exit_code == 2:  # a usage error as every refusal: one sentence, no panel
            assert one_sentence(result.output), (args, result.output[-500:])

    check()


FLAG = st.just(None)  # an option that takes no value
PATHS = st.one_of(st.sampled_from(["", ".", "..", "missing/folder", "[b]x[/b]", "/dev/null"]), ODD_TEXT)
OTHER_VALUES = {
    "--tolerance": NUMBERS, "--reproduce": FLAG, "--replace": FLAG, "--data-root": PATHS, "--images": FLAG,
    "--no-images": FLAG, "--subset": VALUES["--subset"], "--variant": ODD_TEXT, "--steps": st.one_of(NUMBERS, ODD_TEXT),
    "--seed": VALUES["--seed"], "--out": PATHS, "--what": st.one_of(st.sampled_from(["methods", "sequences",
                                                                                     "metrics", "models"]), ODD_TEXT),
    "--sequence": st.one_of(st.just(str(FIXTURES / "two_task_quick.yaml")), ODD_TEXT),
}
# Each command's fixed start (a results file is written into the test's folder first) and the options
# fuzzed after it; "--what" and "--sequence" stand for the positional argument of ls and data check.
OTHER_COMMANDS = {
    "check": (lambda doc, board: ["check", doc, "--against", doc], ["--tolerance"]),
    "submit": (lambda doc, board: ["submit", doc, "--leaderboard", board], ["--reproduce", "--replace", "--data-root"]),
    "data check": (lambda doc, board: ["data", "check"], ["--sequence", "--subset", "--variant", "--data-root",
                                                          "--images", "--no-images"]),
    "ls": (lambda doc, board: ["ls"], ["--what"]),
    "pretrain-tiny": (lambda doc, board: ["pretrain-tiny"], ["--out", "--steps", "--seed"]),
    "pretrain-guide": (lambda doc, board: ["pretrain-guide"], ["--out", "--steps", "--seed"]),
    "schema": (lambda doc, board: ["schema"], ["--out"]),
}
POSITIONAL = ("--what", "--sequence")


def other_arguments(command: str):
    names = OTHER_COMMANDS[command][1]
    chosen = st.lists(st.sampled_from(names).flatmap(lambda name: st.tuples(st.just(name), OTHER_VALUES[name])),
                      max_size=4)
    return chosen.map(lambda pairs: [part for name, value in pairs
                                     for part in ([value] if name in POSITIONAL else [name, value] if value is not None
                                                  else [name])])


@pytest.mark.parametrize("command", sorted(OTHER_COMMANDS))
def test_the_other_commands_options_end_in_one_sentence(command, tmp_path, monkeypatch, cache_root):
    """check, submit, data check, ls, pretrain-tiny, pretrain-guide and schema with fuzzed options on a valid results
    file: success, a regression (check's exit 1), or one sentence; never a traceback. Paths are
    relative to the test's folder, so nothing lands elsewhere; training and pre-training are stubbed."""
    import mcit_bench.engine.reproduce as reproduce
    import mcit_bench.models.guide as guide
    import mcit_bench.models.pretrain as pretrain
    from tests.unit.test_leaderboard import results_doc, write_doc

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MCIT_BENCH_CACHE", str(cache_root))
    monkeypatch.setattr(reproduce, "run_stream", stop)
    monkeypatch.setattr(pretrain, "pretrain", stop)
    monkeypatch.setattr(guide, "pretrain_guide", stop)
    doc = str(write_doc(tmp_path, "results.json", results_doc()))
    runner = CliRunner()
    start, _ = OTHER_COMMANDS[command]

    @fuzz_settings(30, HealthCheck.function_scoped_fixture)
    @given(other_arguments(command))
    def check(args):
        result = runner.invoke(app, [*start(doc, str(tmp_path / "board.json")), *args])
        if isinstance(result.exception, ReachedTraining):
            return
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
        assert "Traceback" not in result.output, args
        assert result.exit_code in ((0, 1, 2) if command == "check" else (0, 2)), (args, result.output[-500:])
        if result.exit_code == 2:
            assert one_sentence(result.output), (args, result.output[-500:])

    check()


def fuzzed_run_directory(folder, document: bytes, predictions: bytes) -> None:
    """A run directory whose results.json and one predictions file hold what the fuzz chose."""
    (folder / "predictions" / "stage1").mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_bytes(document)
    (folder / "predictions" / "stage1" / "imagenet.jsonl").write_bytes(predictions)


FILE_COMMANDS = {
    "score": lambda folder, board: ["score", str(folder)],
    "submit": lambda folder, board: ["submit", str(folder), "--leaderboard", str(board)],
    "check": lambda folder, board: ["check", str(folder), "--against", str(folder / "results.json")],
    "plot": lambda folder, board: ["plot", str(folder), "--out", str(folder / "plots")],
    "convert": lambda folder, board: ["convert", str(folder / "results.json")],
    "leaderboard": lambda folder, board: ["leaderboard", str(folder)],
    "data check": lambda folder, board: ["data", "check", str(folder / "results.json")],
}


@pytest.mark.parametrize("command", sorted(FILE_COMMANDS))
def test_the_commands_that_read_run_files_refuse_any_content_in_one_sentence(command, tmp_path_factory):
    """score, submit, check, plot, convert, leaderboard and data check on a run directory whose files
    hold generated structures or bytes: each succeeds or refuses (exit 2), never a traceback."""
    from tests.unit.test_fuzz_files import DOCUMENTS, as_json, as_jsonl

    runner = CliRunner()
    contents = st.one_of(DOCUMENTS.map(as_json), st.binary(max_size=80))

    @fuzz_settings(25)
    @given(contents, st.one_of(DOCUMENTS.map(as_jsonl), st.binary(max_size=80)))
    def check(document, predictions):
        folder = tmp_path_factory.mktemp("run")
        fuzzed_run_directory(folder, document, predictions)
        board = folder / "board.json"
        result = runner.invoke(app, FILE_COMMANDS[command](folder, board))
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in result.output
        assert result.exit_code in (0, 2), (result.exit_code, result.output[-500:])
        if result.exit_code == 2:
            assert one_sentence(result.output), result.output[-500:]

    check()
