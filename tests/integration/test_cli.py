"""The command line: listings, bad input (one sentence, exit 2, nothing written), a run on real-format files."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcit_bench.cli import app
from tests.conftest import FIXTURES

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_ls_lists_registered_things():
    methods = invoke("ls", "methods").output
    assert all(name in methods for name in ("seqft", "joint", "olora", "keeplora", "mrlora"))
    assert "capabilities" in methods and "selects the" in methods
    assert "synth-coin@1" in invoke("ls", "sequences").output
    metrics = invoke("ls", "metrics").output
    assert "vqa_accuracy" in metrics and "forgetting" in metrics
    assert "mcit-tiny" in invoke("ls", "models").output


@pytest.mark.parametrize("args,message", [
    (["--method", "seqtf"], "unknown method 'seqtf': did you mean 'seqft'?"),
    (["--sequence", "synth-con"], "unknown sequence 'synth-con': did you mean 'synth-coin'?"),
    (["--subset", "tiny"], "sequence 'synth-coin' has no subset 'tiny'; its subsets are ci"),
    (["--option", "lora_rank=0"], "method 'seqft' option lora_rank: Input should be greater than 0"),
    (["--option", "rank"], "--option 'rank' must look like name=value"),
    (["--option", "colour=red"], "method 'seqft' option colour: Extra inputs are not permitted"),
    (["--lr", "-1"], "command line field training.lr: Input should be greater than 0"),
    (["--max-length", "0"], "command line field training.max_length: Input should be greater than 0"),
    # synth-coin's first training sample: a 16-token image and its question do not fit in 12 tokens
    (["--sequence", str(FIXTURES / "two_task_quick.yaml"), "--max-length", "12"],
     "task 'imagenet': sample 'imagenet-train-00000' ("),
    # a flag is a method's own: seqft declares --full, MoELoRA none
    (["--method", "moelora", "--full"], "--full is neither an option of this command nor a flag of method "
                                        "'moelora' (its flags: none)"),
    (["--seed", "18446744073709551616"], "command line field seed: Input should be less than 4294967296"),
    (["--lr", "inf"], "command line field training.lr: Input should be a finite number"),
    (["--seeds", "0,,1"], "--seeds '0,,1' must be integers separated by commas"),
    (["--fulll"], "--fulll is neither an option of this command nor a flag of method 'seqft' (its flags: --full)"),
])
def test_bad_arguments_get_one_sentence_and_exit_2(tmp_path, args, message):
    result = invoke("run", *args, "--output", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_a_config_file_sets_what_the_flags_leave_out(tmp_path):
    """A flag left out keeps the file's value: --method's default once turned a file's ewc into seqft."""
    config = tmp_path / "run.yaml"
    config.write_text(f"method: ewc\nsequence: {FIXTURES / 'two_task_quick.yaml'}\nseed: 3\n"
                      "method_options: {ewc_lambda: 100.0, gamma: 0.9}\ntraining: {lr: 0.002}\n")
    result = invoke("run", "--config", str(config), "--output", str(tmp_path / "runs"),
                    "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "runs" / "two-task-quick" / "ewc" / "seed3" / "config.json").read_text())
    assert (recorded["method"], recorded["seed"], recorded["training"]["lr"]) == ("ewc", 3, 0.002)
    assert recorded["method_options"] == {"ewc_lambda": 100.0, "gamma": 0.9}


@pytest.mark.parametrize("text,message", [
    ("training: [1, 2]\n", "field training must be a mapping of training settings"),
    ("method_options: 5\n", "field method_options must be a mapping of option names to values"),
    (b"method: s\xe9qft\n", "is not UTF-8 text; save it as UTF-8 YAML"),
    ("training: " + "[" * 20000 + "]" * 20000 + "\n", "is nested too deeply to be run settings"),
])
def test_a_config_file_of_the_wrong_shape_gets_one_sentence(tmp_path, text, message):
    config = tmp_path / "run.yaml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = invoke("run", "--config", str(config), "--output", str(tmp_path / "runs"))
    assert result.exit_code == 2 and message in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()


def test_a_run_directory_that_is_a_symbolic_link_is_refused_untouched(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "config.json").write_text("{}")
    link = tmp_path / "runs" / "synth-coin" / "seqft" / "seed0-ci"
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    result = invoke("run", "--subset", "ci", "--output", str(tmp_path / "runs"), "--overwrite")
    assert result.exit_code == 2 and "is a symbolic link" in " ".join(result.output.split())
    assert (real / "config.json").read_text() == "{}" and link.is_symlink()


def test_a_config_that_is_a_folder_gets_one_sentence(tmp_path):
    result = invoke("run", "--config", str(tmp_path), "--output", str(tmp_path / "runs"))
    assert result.exit_code == 2
    assert "is a folder; pass the YAML file of run settings" in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()


def test_a_method_flag_sets_its_option_on_top_of_the_config_file(tmp_path):
    from mcit_bench.cli.options import RunSettings, raw_config

    config = tmp_path / "run.yaml"
    config.write_text("method: joint\nmethod_options: {lora_rank: 8}\n")
    settings = RunSettings(config, None, None, None, None, None, ["lora_alpha=4"], None, {}, ["--full"])
    assert raw_config(settings)["method_options"] == {"lora_rank": 8, "lora_alpha": 4, "full": True}


def test_a_run_scored_on_validation_gets_its_own_default_folder(tmp_path):
    from mcit_bench.config import RunConfig, ValidationSplit
    from mcit_bench.data.stream import load_stream
    from mcit_bench.rundir import run_directory

    stream = load_stream("synth-coin", "ci")
    on_test = RunConfig(method="ewc", subset="ci", seed=2)
    on_validation = on_test.model_copy(update={"validation": ValidationSplit()})
    assert run_directory(tmp_path, stream, on_test, None) == tmp_path / "synth-coin" / "ewc" / "seed2-ci"
    assert run_directory(tmp_path, stream, on_validation, None).name == "seed2-ci-validation"


def test_a_flag_given_overrides_the_config_file(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("method: ewc\nmethod_options: {ewc_lambda: 100.0}\n")
    result = invoke("run", "--config", str(config), "--method", "seqft", "--output", str(tmp_path / "runs"))
    assert result.exit_code == 2
    assert "method 'seqft' option ewc_lambda: Extra inputs are not permitted" in " ".join(result.output.split())


def test_bad_sequence_file_names_the_field(tmp_path):
    sequence = tmp_path / "bad.yaml"
    sequence.write_text((FIXTURES / "two_task.yaml").read_text().replace("steps_per_task: 30", "step_per_task: 30"))
    result = invoke("run", "--sequence", str(sequence), "--output", str(tmp_path / "runs"))
    assert result.exit_code == 2
    message = f"sequence file {sequence} field step_per_task: Extra inputs are not permitted"
    assert message in " ".join(result.output.split())


def files_sequence(tmp_path: Path) -> tuple[Path, Path]:
    """A one-task sequence over the hand-made fixture files, and a copy of them as data root."""
    root = tmp_path / "data"
    shutil.copytree(FIXTURES / "formats", root)
    sequence = tmp_path / "files.yaml"
    sequence.write_text(
        "name: fixture-files\nversion: 1\ndescription: hand-made files in the real formats\n"
        "source: {kind: files}\nsteps_per_task: 2\n"
        "tasks:\n  - {name: colours, type: vqa, train: train.json, test: test.json}\n")
    return sequence, root


@pytest.mark.slow
def test_run_on_real_format_files_prints_the_tables(tmp_path):
    sequence, root = files_sequence(tmp_path)
    result = invoke("run", "--sequence", str(sequence), "--data-root", str(root), "--output", str(tmp_path / "runs"),
                    "--cache-dir", str(tmp_path / "cache"), "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "Accuracy matrix R" in result.output and "BWT" in result.output
    results = json.loads((tmp_path / "runs" / "fixture-files" / "seqft" / "seed0" / "results.json").read_text())
    assert results["task_info"]["colours"]["test_samples"] == 2
    rescored = invoke("score", str(tmp_path / "runs" / "fixture-files" / "seqft" / "seed0"))
    assert rescored.exit_code == 0 and "Accuracy matrix R" in rescored.output


def test_missing_images_are_listed_before_training(tmp_path):
    sequence, root = files_sequence(tmp_path)
    (root / "images" / "red.png").unlink()
    result = invoke("run", "--sequence", str(sequence), "--data-root", str(root), "--output", str(tmp_path / "runs"),
                    "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 2
    assert "1 image files are missing" in result.output and "red.png" in result.output


def test_real_sequence_without_data_root_says_what_to_pass(tmp_path):
    sequence, _ = files_sequence(tmp_path)
    result = invoke("run", "--sequence", str(sequence), "--output", str(tmp_path / "runs"))
    assert result.exit_code == 2 and "pass --data-root" in result.output


def test_score_of_a_missing_run_is_one_sentence(tmp_path):
    result = invoke("score", str(tmp_path / "nothing"))
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.mark.slow
def test_corrupt_image_is_named_and_nothing_is_half_written(tmp_path):
    sequence, root = files_sequence(tmp_path)
    (root / "images" / "grey.png").write_bytes(b"this is not a png")
    result = invoke("run", "--sequence", str(sequence), "--data-root", str(root), "--output", str(tmp_path / "runs"),
                    "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 2
    assert "grey.png cannot be read" in result.output and "replace or remove that record" in result.output
    run_dir = tmp_path / "runs" / "fixture-files" / "seqft" / "seed0"
    assert not (run_dir / "results.json").exists() and not list(run_dir.rglob("*.tmp"))


def test_a_model_that_cannot_be_loaded_offline_gets_one_sentence(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    for model, message in ((str(tmp_path / "missing"), "is neither a registered model"),
                           (str(empty), "cannot be loaded")):
        result = invoke("run", "--model", model, "--subset", "ci", "--output", str(tmp_path / "runs"),
                        "--cache-dir", str(tmp_path / "cache"))
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
        assert not (tmp_path / "runs").exists()  # refused before the run directory was claimed


def test_a_hub_id_missing_from_the_cache_fails_at_once_without_network_noise(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "mcit_bench.cli", "run", "--model", "nosuch/model", "--subset", "ci",
                           "--output", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in __import__("os").environ.items() if k != "HF_HUB_OFFLINE"})
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is not a folder and not in the local Hugging Face cache" in lines[0], done.stderr
    assert not (tmp_path / "runs").exists()


def test_errors_keep_their_brackets(tmp_path):
    sequence = tmp_path / "bad.yaml"
    sequence.write_text((FIXTURES / "two_task_quick.yaml").read_text().replace("name: two-task-quick",
                                                                              "name: ../../escape"))
    result = runner.invoke(app, ["data", "check", str(sequence)])
    assert result.exit_code == 2
    assert "^[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}$" in " ".join(result.output.split())  # not eaten as markup


def test_a_synthetic_task_that_does_not_exist_gets_a_did_you_mean(tmp_path):
    sequence = tmp_path / "typo.yaml"
    sequence.write_text((FIXTURES / "two_task_quick.yaml").read_text().replace("{name: textvqa,", "{name: textvq,"))
    result = runner.invoke(app, ["run", "--sequence", str(sequence), "--output", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "there is no synthetic task 'textvq': did you mean 'textvqa'?" in " ".join(result.output.split())


def test_the_leaderboard_shows_the_shipped_board_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["leaderboard", "--format", "csv"])
    assert result.exit_code == 0, result.output
    methods = {line.split(",")[3] for line in result.stdout.splitlines()[1:]}
    assert methods >= {"seqft", "joint", "branchlora", "dmole"}
    assert "showing the leaderboard shipped with mcit-bench" in result.output
    missing = runner.invoke(app, ["leaderboard", "--leaderboard", str(tmp_path / "none.json")])
    assert missing.exit_code == 2 and "none.json does not exist; pass --leaderboard PATH" in missing.output


BUGGY = """
import sys
import mcit_bench.cli.runs as runs
from mcit_bench.cli import main

def broken(text):
    raise RuntimeError("a bug no check caught")

runs.parse_seeds = broken
sys.argv = ["mcit-bench", "run", "--seeds", "0,1", "--output", sys.argv[1]]
main()
"""


@pytest.mark.parametrize("debug", [False, True])
def test_a_bug_ends_in_one_sentence_naming_its_saved_traceback(tmp_path, debug):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "MCIT_BENCH_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path),
           **({"MCIT_BENCH_DEBUG": "1"} if debug else {})}
    done = subprocess.run([sys.executable, "-c", BUGGY, str(tmp_path / "runs")], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 70
    [saved] = (tmp_path / "cache" / "tracebacks").iterdir()
    assert "RuntimeError: a bug no check caught" in saved.read_text()
    last = " ".join(done.stderr.split())
    assert last.endswith(f"bug: mcit-bench failed on something no check caught (RuntimeError); its traceback is "
                         f"saved in {saved}; please report it with the command you ran")
    assert ("Traceback (most recent call last)" in done.stderr) is debug
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command, target, reason", [
    ("schema", "parent-is-a-file/schema.json", "a part of its path is a file, not a folder"),
    ("leaderboard", "a-folder", "it is a folder"),
])
def test_out_where_no_file_can_be_written_is_one_sentence(tmp_path, command, target, reason):
    """``--out`` into a place no file can be: one sentence naming it and why, exit 2, no traceback,
    and nothing written (the last-resort handler does not fire: it is the user's choice of place)."""
    import os
    import subprocess
    import sys

    (tmp_path / "parent-is-a-file").write_text("not a folder")
    (tmp_path / "a-folder").mkdir()
    before = sorted(path.name for path in tmp_path.rglob("*"))
    out = tmp_path / target
    done = subprocess.run([sys.executable, "-m", "mcit_bench.cli", command, "--out", str(out)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "MCIT_BENCH_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: could not write {out}: {reason}; choose another --output or --out"
    assert "Traceback" not in done.stdout + done.stderr
    assert sorted(path.name for path in tmp_path.rglob("*")) == before
