"""Fault injection on the quick two-task stream: a run killed with SIGKILL at each kind of point
resumes to the uninterrupted matrix, and every kind of run file, truncated or bit-flipped, gives a
clean refusal or a verified restart, never a traceback.

The kills are exact, not timed: a driver process (``KILLER`` below) wraps one of the harness's own
functions so that the process SIGKILLs itself at the chosen point, which leaves the run directory
exactly as a crash there would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcit_bench.cli import app
from mcit_bench.config import RunConfig
from mcit_bench.core.errors import UserError
from mcit_bench.engine.run import run_stream
from tests.conftest import FIXTURES

pytestmark = pytest.mark.slow

SEQUENCE = str(FIXTURES / "two_task_quick.yaml")
RUN_ID = "faulty"

# Runs the stream and SIGKILLs the process at one point: argv = point, output folder, cache folder.
KILLER = r'''
import os, signal, sys
from pathlib import Path

import mcit_bench.engine.checkpoint as checkpoint
import mcit_bench.engine.generate as generate
import mcit_bench.engine.run as runner
from mcit_bench.config import RunConfig
from mcit_bench.models.collate import InstructionCollator

point, output, cache, sequence, run_id = sys.argv[1:6]
calls = {"n": 0}


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def wrap(owner, name, when):
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if when(calls["n"], args):
            die()
        result = original(*args, **kwargs)
        return result

    setattr(owner, name, wrapped)


if point == "training":  # the 3rd training batch of stage 2
    trained = {"stage2": False}
    original_train = runner.save_checkpoint

    def mark(*args, **kwargs):
        trained["stage2"] = True
        return original_train(*args, **kwargs)

    runner.save_checkpoint = mark
    batches = InstructionCollator.train_batch

    def batch(self, rows):
        if trained["stage2"]:
            calls["n"] += 1
            if calls["n"] == 3:
                die()
        return batches(self, rows)

    InstructionCollator.train_batch = batch
elif point == "evaluation":  # stage 1's predictions: the first task written, the second not
    wrap(generate, "write_predictions", lambda n, args: n == 4)
elif point == "checkpoint":  # stage 2's checkpoint: the weights written into the staging folder, the rest not
    wrap(checkpoint, "save_file", lambda n, args: n == 4)
elif point == "progress":  # stage 1's progress.json: its temporary file written, not renamed
    import mcit_bench.core.io as io
    replace = os.replace
    seen = {"n": 0}

    def renaming(source, target):
        if str(target).endswith("progress.json"):
            seen["n"] += 1
            if seen["n"] == 2:
                die()
        return replace(source, target)

    io.os.replace = renaming
elif point == "results":  # results.json: its temporary file written, not renamed
    import mcit_bench.core.io as io
    replace = os.replace

    def renaming(source, target):
        if str(target).endswith("results.json"):
            die()
        return replace(source, target)

    io.os.replace = renaming
runner.run_stream(RunConfig(method="seqft", sequence=sequence, seed=0), Path(output), run_id=run_id,
                  cache_root=Path(cache))
'''


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache_root):
    return run_stream(RunConfig(method="seqft", sequence=SEQUENCE, seed=0), tmp_path_factory.mktemp("whole"),
                      cache_root=cache_root)["matrix"]


def run_dir(output: Path) -> Path:
    return output / "two-task-quick" / "seqft" / RUN_ID


def resume(output: Path, cache_root: Path) -> dict:
    return run_stream(RunConfig(method="seqft", sequence=SEQUENCE, seed=0), output, run_id=RUN_ID,
                      cache_root=cache_root, resume=True)


@pytest.mark.parametrize("point", ["training", "evaluation", "checkpoint", "progress", "results"])
def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_matrix(point, tmp_path, cache_root, uninterrupted):
    output = tmp_path / "runs"
    killed = subprocess.run([sys.executable, "-c", KILLER, point, str(output), str(cache_root), SEQUENCE, RUN_ID],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    folder = run_dir(output)
    assert not (folder / "results.json").exists()
    for path in folder.rglob("*.json"):  # whatever was left is whole JSON: every write is atomic
        if not path.name.startswith("."):
            json.loads(path.read_text())
    resumed = resume(output, cache_root)
    assert resumed["matrix"] == uninterrupted
    assert not list(folder.rglob(".*.tmp")) and not list(folder.rglob("*.partial"))  # leftovers removed


def stopped_after_stage_one(output: Path, cache_root: Path) -> Path:
    run_stream(RunConfig(method="seqft", sequence=SEQUENCE, seed=0), output, run_id=RUN_ID, cache_root=cache_root,
               stop_after_stage=1)
    return run_dir(output)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_last_byte(path: Path) -> None:  # the header stays intact: only a digest can tell
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = [
    ("checkpoints/stage1/weights.safetensors", truncate, "does not match its digest: resuming after stage 0"),
    ("checkpoints/stage1/weights.safetensors", flip_last_byte, "does not match its digest: resuming after stage 0"),
    ("checkpoints/stage1/method_state.json", truncate, "does not match its digest: resuming after stage 0"),
    ("predictions/stage1/textvqa.jsonl", truncate, "does not match its digest: resuming after stage 0"),
    ("predictions/stage0/imagenet.jsonl", flip_last_byte, "base model's evaluation does not match its digest"),
    ("progress.json", truncate, "progress.json is damaged: the run starts again from its first stage"),
]


@pytest.mark.parametrize("name,damage,said", DAMAGE, ids=[f"{d[0]}-{d[1].__name__}" for d in DAMAGE])
def test_damaged_run_files_restart_from_the_last_verified_stage(name, damage, said, tmp_path, cache_root,
                                                                 uninterrupted, capsys):
    from rich.console import Console

    folder = stopped_after_stage_one(tmp_path / "runs", cache_root)
    damage(folder / name)
    console = Console(force_terminal=False, width=200)
    resumed = run_stream(RunConfig(method="seqft", sequence=SEQUENCE, seed=0), tmp_path / "runs", run_id=RUN_ID,
                         cache_root=cache_root, resume=True, console=console)
    assert said in " ".join(capsys.readouterr().out.split())
    assert resumed["matrix"] == uninterrupted


def test_a_damaged_config_is_refused_in_one_sentence(tmp_path, cache_root):
    folder = stopped_after_stage_one(tmp_path / "runs", cache_root)
    truncate(folder / "config.json")
    result = CliRunner().invoke(app, ["run", "--method", "seqft", "--sequence", SEQUENCE, "--output",
                                      str(tmp_path / "runs"), "--run-id", RUN_ID, "--resume",
                                      "--cache-dir", str(cache_root)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "config.json is damaged" in result.output and "pass --overwrite to start the run again" in result.output


def test_a_damaged_checkpoint_without_digests_is_refused_in_one_sentence(tmp_path, cache_root):
    folder = stopped_after_stage_one(tmp_path / "runs", cache_root)
    progress = json.loads((folder / "progress.json").read_text())
    del progress["digests"]  # as written before digests were recorded
    (folder / "progress.json").write_text(json.dumps(progress))
    truncate(folder / "checkpoints/stage1/weights.safetensors")
    with pytest.raises(UserError, match=r"checkpoint .*stage1 is damaged \(.*\); pass --overwrite"):
        resume(tmp_path / "runs", cache_root)


@pytest.mark.parametrize("run_id", ["{elsewhere}", "../../x"])  # an absolute folder, then one that climbs out
def test_paths_from_the_user_stay_under_the_output(run_id, tmp_path, cache_root):
    run_id = run_id.format(elsewhere=tmp_path / "elsewhere")
    result = CliRunner().invoke(app, ["run", "--method", "seqft", "--sequence", SEQUENCE, "--output",
                                      str(tmp_path / "runs"), "--cache-dir", str(cache_root), "--run-id", run_id])
    assert result.exit_code == 2 and f"run id '{run_id}' cannot name a folder" in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()


def test_an_output_that_is_a_file_is_refused(tmp_path, cache_root):
    output = tmp_path / "runs"
    output.write_text("not a folder")
    result = CliRunner().invoke(app, ["run", "--method", "seqft", "--sequence", SEQUENCE, "--output", str(output),
                                      "--cache-dir", str(cache_root)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert output.read_text() == "not a folder"


# Runs the CLI with the disk filling up at one point: argv = point, output, cache, sequence, run id.
FULL_DISK = r'''
import errno, sys

import mcit_bench.core.io as io
import mcit_bench.engine.checkpoint as checkpoint
from mcit_bench.cli import main

point, output, cache, sequence, run_id = sys.argv[1:6]
full = OSError(errno.ENOSPC, "No space left on device")
if point == "checkpoint":  # the second stage's weights, written by safetensors
    saves = {"n": 0}
    original = checkpoint.save_file

    def save_file(*args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 3:  # stage 1 saves weights and method state; stage 2's weights fail
            raise full
        return original(*args, **kwargs)

    checkpoint.save_file = save_file
else:  # the harness's own atomic write of stage 1's predictions
    original_fsync = io.os.fsync

    def fsync(fd):
        if any(".imagenet.jsonl." in str(p) for p in __import__("pathlib").Path(output).rglob("stage1/.*.tmp")):
            raise full
        return original_fsync(fd)

    io.os.fsync = fsync
sys.argv = ["mcit-bench", "run", "--method", "seqft", "--sequence", sequence, "--output", output,
            "--run-id", run_id, "--cache-dir", cache]
main()
'''


@pytest.mark.parametrize("point,named", [("checkpoint", "checkpoints/stage2"),
                                         ("predictions", "stage1/imagenet.jsonl")])
def test_a_full_disk_ends_in_one_sentence_and_resume_finishes(point, named, tmp_path, cache_root, uninterrupted):
    output = tmp_path / "runs"
    full = subprocess.run([sys.executable, "-c", FULL_DISK, point, str(output), str(cache_root), SEQUENCE, RUN_ID],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    said = " ".join(full.stderr.split())
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-2000:]
    assert f"{named}: no space is left on its device; free space" in said
    assert "continues from its last verified stage with --resume" in said
    leftovers = list(run_dir(output).rglob(".*.tmp")) + list(run_dir(output).rglob("*.partial"))
    assert not leftovers  # the refused write left nothing half-written
    assert resume(output, cache_root)["matrix"] == uninterrupted
