"""End to end on mcit-tiny: a two-task stream, its golden matrix, resume, refusals, re-scoring."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from mcit_bench.config import RunConfig
from mcit_bench.core.errors import ConfigError
from mcit_bench.engine.run import run_stream
from mcit_bench.results.scoring import rescore_run
from mcit_bench.scoring.continual import summarize
from tests.conftest import FIXTURES, GOLDEN

SEQUENCE = str(FIXTURES / "two_task.yaml")
GOLDEN_FILE = GOLDEN / "two_task_seqft.json"
TEST_SAMPLES = 16

# LoRA r=16 on the 7 linear layers of each of 4 Llama layers (hidden 128, MLP 384):
# q, k, v, o: 16 * (128 + 128) each; gate, up, down: 16 * (128 + 384) each.
LORA_PARAMS = 4 * (4 * 16 * (128 + 128) + 3 * 16 * (128 + 384))
# LLaVA projector: two 128 x 128 linear layers with biases.
PROJECTOR_PARAMS = 2 * (128 * 128 + 128)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache_root):
    output = tmp_path_factory.mktemp("runs")
    results = run_stream(RunConfig(method="seqft", sequence=SEQUENCE, seed=0), output, cache_root=cache_root)
    return output / "two-task" / "seqft" / "seed0", results


def test_matrix_matches_golden(finished):
    _, results = finished
    matrix = np.array(results["matrix"])
    if os.environ.get("MCIT_BENCH_UPDATE_GOLDEN"):
        GOLDEN_FILE.write_text(json.dumps({"matrix": results["matrix"]}, indent=2) + "\n")
    golden = np.array(json.loads(GOLDEN_FILE.read_text())["matrix"])
    # one test sample flipping is within tolerance; anything more is a regression
    np.testing.assert_allclose(matrix, golden, atol=100 / TEST_SAMPLES + 1e-9)
    assert matrix.shape == (3, 2) and matrix[0].max() == 0.0  # the base model knows neither task


def test_results_are_complete_and_consistent(finished):
    run_dir, results = finished
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved == results
    assert results["summary"] == {k: (None if v is None else round(v, 4))
                                  for k, v in summarize(np.array(results["matrix"])).items()}
    assert results["run"]["sequence"]["tasks"] == ["imagenet", "textvqa"]
    from mcit_bench.core.lock import environment_record

    assert results["run"]["environment"] == environment_record()  # the lock's digest in CI's environment
    assert results["task_info"]["textvqa"] == {"type": "vqa", "metric": "vqa_accuracy", "like": "TextVQA",
                                               "test_samples": TEST_SAMPLES}
    assert results["cost"]["trainable_params_per_stage"] == [LORA_PARAMS + PROJECTOR_PARAMS] * 2
    assert results["cost"]["added_params"] == LORA_PARAMS
    assert [stage["steps"] for stage in results["stages"]] == [30, 30]
    for stage in range(3):
        for task in ("imagenet", "textvqa"):
            lines = (run_dir / "predictions" / f"stage{stage}" / f"{task}.jsonl").read_text().splitlines()
            assert len(lines) == TEST_SAMPLES
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["stage1", "stage2"]


def test_resume_equals_uninterrupted(finished, tmp_path, cache_root):
    _, uninterrupted = finished
    config = RunConfig(method="seqft", sequence=SEQUENCE, seed=0)
    stopped = run_stream(config, tmp_path, cache_root=cache_root, stop_after_stage=1)
    assert stopped is None
    resumed = run_stream(config, tmp_path, cache_root=cache_root, resume=True)
    assert resumed["matrix"] == uninterrupted["matrix"]
    assert resumed["cost"]["trainable_params_per_stage"] == uninterrupted["cost"]["trainable_params_per_stage"]


def test_existing_run_directory_is_refused_untouched(finished, cache_root):
    run_dir, _ = finished
    output = run_dir.parents[2]
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"already holds a run with this config \(finished\); pass --resume"):
        run_stream(RunConfig(method="seqft", sequence=SEQUENCE, seed=0), output, cache_root=cache_root)
    with pytest.raises(ConfigError, match=r"different config: training\.lr"):
        run_stream(RunConfig(method="seqft", sequence=SEQUENCE, seed=0, training={"lr": 0.5}), output,
                   run_id="seed0", cache_root=cache_root)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_rescoring_recomputes_from_predictions(finished, tmp_path):
    run_dir, results = finished
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    rescored, changes = rescore_run(copy)
    assert rescored["matrix"] == results["matrix"] and changes == []
    # a results file scored otherwise (by hand, by an older version) is scored again, and the change told
    document = json.loads((copy / "results.json").read_text())
    document["matrix"][2][1] = 0.0
    document["summary"]["final_acc"] = document["matrix"][2][0] / 2
    (copy / "results.json").write_text(json.dumps(document))
    rescored, changes = rescore_run(copy)
    assert rescored["matrix"] == results["matrix"]
    assert f"matrix[2][1]: 0.0 -> {results['matrix'][2][1]}" in changes  # reported, never silent


def test_rescoring_refuses_predictions_edited_after_the_run(finished, tmp_path):
    """The forgery of issue 30: answers set to their references, then 'score'. The digests the run
    recorded name the edited file, and results.json is left as the run wrote it."""
    from mcit_bench.core.errors import DataError

    run_dir, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    written = (copy / "results.json").read_bytes()
    predictions = copy / "predictions" / "stage2" / "textvqa.jsonl"
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    for line in lines:
        line["prediction"] = line["answers"][0]
    predictions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(DataError, match=f"predictions file {predictions} changed after the run wrote it"):
        rescore_run(copy)
    assert (copy / "results.json").read_bytes() == written


def test_submit_rescores_a_run_directory_and_refuses_a_forged_matrix(finished, tmp_path, monkeypatch, cache_root):
    import mcit_bench.board.submit as board
    from mcit_bench.board.leaderboard import read_leaderboard
    from mcit_bench.board.stats import aggregate
    from mcit_bench.core.errors import DataError

    run_dir, results = finished
    sequence = results["run"]["sequence"]  # the two-task fixture stands in for a shipped sequence here
    monkeypatch.setattr(board, "shipped_sequence", lambda *_: (sequence["version"], sequence["content_hash"]))
    monkeypatch.setattr(board, "shipped_tasks", lambda *_: sequence["tasks"])
    assert sorted(results["prediction_digests"]) == [f"stage{stage}/{task}.jsonl" for stage in range(3)
                                                     for task in ("imagenet", "textvqa")]

    # a forged cell with a recomputed summary is self-consistent, but the predictions refuse it
    forged = tmp_path / "forged"
    shutil.copytree(run_dir, forged)
    doc = json.loads((forged / "results.json").read_text())
    doc["matrix"][2][1] = round(doc["matrix"][2][1] - 12.5, 4)
    doc["summary"] = {k: (None if v is None else round(v, 4)) for k, v in summarize(np.array(doc["matrix"])).items()}
    (forged / "results.json").write_text(json.dumps(doc))
    leaderboard = tmp_path / "board.json"
    with pytest.raises(DataError, match=f"the matrix says {doc['matrix'][2][1]} for textvqa after training "
                                        f"textvqa \\(row 2\\), but the saved predictions score "
                                        f"{results['matrix'][2][1]}"):
        board.submit_all([forged], leaderboard)
    assert not leaderboard.exists()

    # predictions edited after the run no longer match their digests
    edited = tmp_path / "edited"
    shutil.copytree(run_dir, edited)
    with (edited / "predictions" / "stage1" / "imagenet.jsonl").open("a") as handle:
        handle.write("\n")
    with pytest.raises(DataError, match="stage1/imagenet.jsonl changed after the run wrote it"):
        board.submit_all([edited], leaderboard)

    # the run directory is verified (its predictions answer the fixture's own test split); the same
    # results file submitted alone is marked unverified, and the row is as proven as its weakest seed
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run_dir / "results.json", alone / "results.json")
    [entry] = board.submit_all([run_dir], leaderboard, proof=board.Proof(cache_root=cache_root))
    assert entry.tier == "verified"
    other = json.loads((alone / "results.json").read_text())
    other["run"]["seed"] = 1
    (alone / "results.json").write_text(json.dumps(other))
    [entry] = board.submit_all([alone / "results.json"], leaderboard)
    assert entry.tier == "unverified"
    [row] = aggregate(read_leaderboard(leaderboard).entries)
    assert row.tier == "unverified" and row.seeds == [0, 1]


def test_joint_is_one_row_repeated_and_flagged(tmp_path, cache_root):
    results = run_stream(RunConfig(method="joint", sequence=SEQUENCE, seed=0), tmp_path, cache_root=cache_root)
    assert results["matrix"][1] == results["matrix"][2]
    assert results["run"]["upper_bound"] is True
    assert results["summary"]["bwt"] == 0.0
    assert [stage["steps"] for stage in results["stages"]] == [60]  # the same total budget as seqft


@pytest.mark.parametrize("settings", [
    {"training": {"gradient_checkpointing": True}},  # recomputation: the same numbers
    {"precision": "bf16"},  # bfloat16 weights and products, float32 adapters: within one sample
], ids=["gradient-checkpointing", "bf16"])
def test_memory_saving_settings_keep_the_golden_matrix(tmp_path, cache_root, settings):
    results = run_stream(RunConfig(method="seqft", sequence=SEQUENCE, seed=0, **settings), tmp_path,
                         cache_root=cache_root)
    golden = np.array(json.loads(GOLDEN_FILE.read_text())["matrix"])
    np.testing.assert_allclose(np.array(results["matrix"]), golden, atol=100 / TEST_SAMPLES + 1e-9)
    if "precision" in settings:
        from mcit_bench.models.loading import load_model

        model, _ = load_model("mcit-tiny", torch.bfloat16)
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_results_record_the_commit_the_run_started_on(tmp_path, cache_root, monkeypatch):
    """A commit made while a run trains is not the code the run imported: the start's commit is kept."""
    import mcit_bench.engine.run as runner
    import mcit_bench.engine.train as train

    checkout = {"commit": "started-on", "dirty": False}
    monkeypatch.setattr(runner, "git_state", lambda: dict(checkout))
    original = train.train_stage

    def train_then_commit(*args, **kwargs):
        stats = original(*args, **kwargs)
        checkout.update(commit="committed-meanwhile", dirty=True)
        return stats

    monkeypatch.setattr(train, "train_stage", train_then_commit)
    quick = str(FIXTURES / "two_task_quick.yaml")
    results = run_stream(RunConfig(method="seqft", sequence=quick, seed=0), tmp_path, cache_root=cache_root)
    assert checkout["commit"] == "committed-meanwhile"  # the commit did happen during the run
    assert results["run"]["git"] == {"commit": "started-on", "dirty": False}


SUBMIT_WITHOUT_TORCH = """
import json, sys
from pathlib import Path
import mcit_bench.board.submit as board
sequence = json.loads(sys.argv[1])
board.shipped_sequence = lambda *_: (sequence["version"], sequence["content_hash"])
board.shipped_tasks = lambda *_: sequence["tasks"]
entries = board.submit_all([Path(sys.argv[2])], Path(sys.argv[3]), False)
print(json.dumps({"tiers": [entry.tier for entry in entries],
                  "loaded": sorted(name for name in ("torch", "transformers", "accelerate") if name in sys.modules)}))
"""


def test_submit_rescores_a_run_without_loading_torch(finished, tmp_path, cache_root):
    """Re-scoring and setting the predictions beside the test split (generated here) need no torch."""
    import subprocess
    import sys

    run_dir, results = finished
    done = subprocess.run([sys.executable, "-c", SUBMIT_WITHOUT_TORCH, json.dumps(results["run"]["sequence"]),
                           str(run_dir), str(tmp_path / "board.json")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MCIT_BENCH_CACHE": str(cache_root)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"tiers": ["verified"], "loaded": []}


def test_the_api_runs_a_config_and_returns_results_with_frames(tmp_path, cache_root):
    """mcit_bench.run is the command line's path: the same run directory, results and matrix."""
    import mcit_bench as mb

    quick = str(FIXTURES / "two_task_quick.yaml")
    results = mb.run("seqft", quick, seed=0, output=tmp_path, cache_root=cache_root, training={"lr": 2e-3})
    assert results.run.config.training.lr == 2e-3 and results.run.run_dir == str(tmp_path / "two-task-quick" /
                                                                                   "seqft" / "seed0")
    matrix = results.matrix_frame()
    assert matrix.index.tolist() == ["base", "after imagenet", "after textvqa"]
    assert matrix.values.tolist() == results.matrix
    assert mb.load_results(results.run.run_dir)[0] == results
