"""``submit --reproduce``: a submitted run trained again from the config and seed its results record,
its predictions and checkpoints set beside the submitted ones.

Training again, rather than only answering again from the saved checkpoints, is what proves the
entry's identity: a checkpoint proves that the predictions came from it, not that it came from the
recorded config and seed (an edited seed or setting would pass). On the machine kind the run recorded
(the same device description) the predictions must be identical line by line and every stage's
checkpoint byte for byte; elsewhere the matrices must agree within ``CROSS_DEVICE_SAMPLES`` test
samples a cell (docs/RESULTS.md says why).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mcit_bench.core.errors import DataError
from mcit_bench.core.io import file_digest
from mcit_bench.engine.environment import device_description, git_state
from mcit_bench.engine.run import run_stream
from mcit_bench.results.document import Results
from mcit_bench.rundir import RunPaths, predictions_files

# Greedy decoding on another device (other kernels, another thread count) may flip an answer whose two
# best tokens are within rounding of each other; a cell may move by this many test samples' worth.
CROSS_DEVICE_SAMPLES = 2


def reproduce_run(results: Results, run_dir: Path, data_root: Path | None = None,
                  cache_root: Path | None = None) -> None:
    """Train ``results``' recorded config again in a scratch folder and refuse the submission, in one
    sentence naming the first difference, unless the new run answers as the submitted one did."""
    source = str(run_dir)
    config = results.run.config
    if (config.seed, config.method) != (results.run.seed, results.run.method):
        raise DataError(f"{source}: results.json names seed {results.run.seed} and method {results.run.method!r}, but "
                        f"the config it records has seed {config.seed} and method {config.method!r}; submit the "
                        f"results the run wrote")
    if config.shard is not None:
        raise DataError(f"{source}: --reproduce trains in one process and this run was sharded (shard: "
                        f"{config.shard}); submit it without --reproduce")
    with tempfile.TemporaryDirectory(prefix="mcit-bench-reproduce-") as scratch:
        rerun = run_stream(config, Path(scratch), run_id="reproduced", data_root=data_root, cache_root=cache_root)
        if rerun is None:  # run_stream returns None only when told to stop early
            raise DataError(f"{source}: the reproduction stopped before its last stage")
        again = Path(rerun["run"]["run_dir"])
        code = code_note(results)
        if results.run.device == device_description():
            compare_predictions(run_dir, again, source, code)
            compare_checkpoints(results, RunPaths(run_dir), RunPaths(again), source, code)
        else:
            compare_matrices(results, rerun["matrix"], source, code)


def code_note(results: Results) -> str:
    """What to say of the code when a reproduction differs: another commit explains a difference."""
    recorded, here = results.run.git.get("commit"), git_state().get("commit")
    if recorded and here and recorded != here:
        return f" (the run recorded commit {recorded[:12]}, this checkout is {here[:12]}: reproduce with the run's)"
    return ""


def compare_predictions(run_dir: Path, again: Path, source: str, code: str) -> None:
    """Every predictions file of the reproduction equal to the submitted one, line by line."""
    submitted = {path.relative_to(run_dir): path for path in predictions_files(run_dir)}
    reproduced = {path.relative_to(again): path for path in predictions_files(again)}
    if set(submitted) != set(reproduced):
        extra = sorted(map(str, set(submitted) ^ set(reproduced)))
        raise DataError(f"{source}: the reproduction wrote other predictions files than the run (first: {extra[0]}); "
                        f"submit the run directory as the run wrote it{code}")
    for name in sorted(submitted):
        ours = submitted[name].read_text(encoding="utf-8", errors="replace").splitlines()
        theirs = reproduced[name].read_text(encoding="utf-8").splitlines()
        for number, (line, line_again) in enumerate(zip(ours, theirs), start=1):
            if line != line_again:
                raise DataError(f"{source}: trained again from its config and seed, the run answers {name} line "
                                f"{number} with {answer_of(line_again)} where the submitted predictions have "
                                f"{answer_of(line)}; the predictions did not come from this config and seed{code}")
        if len(ours) != len(theirs):
            raise DataError(f"{source}: {name} has {len(ours)} lines and the reproduction {len(theirs)}; the "
                            f"predictions did not come from this config and seed{code}")


def compare_checkpoints(results: Results, submitted: RunPaths, again: RunPaths, source: str, code: str) -> None:
    """Every stage's checkpoint files byte for byte: two seeds or settings can answer alike on a few test
    samples, never with the same trained weights."""
    for stage in results.stages:
        ours, theirs = submitted.checkpoint(stage.stage), again.checkpoint(stage.stage)
        if not ours.is_dir():
            raise DataError(f"{source}: stage {stage.stage}'s checkpoint {ours} is missing and --reproduce compares "
                            f"the trained weights; keep the run's checkpoints, or submit without --reproduce")
        for path in sorted(theirs.iterdir()):
            mine = ours / path.name
            if not mine.is_file() or file_digest(mine) != file_digest(path):
                raise DataError(f"{source}: trained again from its config and seed, stage {stage.stage}'s "
                                f"{path.name} differs from the run's {mine}; the checkpoints did not come from "
                                f"this config and seed{code}")


def answer_of(line: str) -> str:
    """A predictions line as a message shows it: its question id and answer, or the line's start."""
    try:
        found = json.loads(line)
        return f"{str(found['prediction'])[:80]!r} (question {str(found['question_id'])[:40]})"
    except (ValueError, KeyError, TypeError, RecursionError):
        return repr(line[:80])


def compare_matrices(results: Results, matrix: list[list[float]], source: str, code: str) -> None:
    """On another device: every cell within ``CROSS_DEVICE_SAMPLES`` test samples' worth of the submitted one."""
    for row, (submitted_row, again_row) in enumerate(zip(results.matrix, matrix)):
        for task, submitted, again in zip(results.tasks, submitted_row, again_row):
            allowed = CROSS_DEVICE_SAMPLES * 100.0 / results.task_info[task].test_samples
            if abs(submitted - again) > allowed + 1e-9:
                raise DataError(f"{source}: trained again on {device_description()} (the run: {results.run.device}), "
                                f"{task} in row {row} scores {again} against the submitted {submitted}, more than "
                                f"{CROSS_DEVICE_SAMPLES} test samples apart; the predictions did not come from this "
                                f"config and seed{code}")
