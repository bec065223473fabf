"""The real streams end to end on CPU: a tiny LLaVA built locally from its config, the hand-made
fixture trees as --data-root, the same command a researcher runs on the downloaded benchmark."""

import json

import pytest
from typer.testing import CliRunner

from mcit_bench.cli import app
from mcit_bench.data.stream import load_stream
from tests.conftest import FIXTURES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_llava_dir(tmp_path_factory):
    """A random LLaVA of mcit-tiny's shape, saved like any Hugging Face model folder."""
    from mcit_bench.models.tiny import build_tiny

    folder = tmp_path_factory.mktemp("tiny-llava")
    model, processor = build_tiny(seed=0)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("sequence,tasks,samples", [
    ("coin", ["sqa", "textvqa", "imagenet", "gqa", "vizwiz", "grounding", "vqav2", "ocrvqa"],
     {"textvqa": 2, "grounding": 3}),
    ("ucit", ["imagenet-r", "arxivqa", "vizwiz-caption", "iconqa", "clevr-math", "flickr30k"],
     {"vizwiz-caption": 2, "flickr30k": 1}),
    ("dmole9", ["vizwiz-caption", "skvg", "textcaps", "iconqa", "ocrvqa", "flickr30k", "vizwiz-vqa", "kvqa", "pmc-vqa"],
     {"skvg": 2, "textcaps": 1}),
])
def test_seqft_runs_a_real_stream_from_its_published_layout(tmp_path, tiny_llava_dir, sequence, tasks, samples):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, [
        "run", "--method", "seqft", "--sequence", sequence, "--data-root", str(FIXTURES / "published" / sequence),
        "--model", str(tiny_llava_dir), "--steps-per-task", "2", "--batch-size", "2",
        "--output", str(runs), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    run_dir = runs / sequence / "seqft" / "seed0"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["tasks"] == tasks
    assert len(results["matrix"]) == len(tasks) + 1 and all(len(row) == len(tasks) for row in results["matrix"])
    for task, count in samples.items():
        assert results["task_info"][task]["test_samples"] == count
    if sequence != "coin":  # CIDEr in the matrix, BLEU-4 beside it after every stage
        assert results["task_info"]["flickr30k"]["metric"] == "cider"
        assert "flickr30k" in results["extra_scores"]["bleu4"]
        assert len(results["extra_scores"]["bleu4"]["flickr30k"]) == len(tasks) + 1
    else:
        assert "extra_scores" not in results
    # each source's own scoring of the same predictions, every task by its rule, beside the sound matrix
    published = results["as_published"]
    assert published["metrics"] == {task.name: task.as_published.metric for task in load_stream(sequence).tasks}
    assert len(published["matrix"]) == len(tasks) + 1 and set(published["summary"]) == set(results["summary"])
    # mcit-tiny's vocabulary is synth-coin's: the run says at the start that it cannot read real text
    assert "warning: the model's tokenizer maps" in " ".join(result.output.split())
    predictions = (run_dir / "predictions" / "stage1" / tasks[1]).with_suffix(".jsonl").read_text().splitlines()
    assert len(predictions) == samples.get(tasks[1], 1)
    # the scorer recomputes the same matrix from the saved predictions
    rescored = CliRunner().invoke(app, ["score", str(run_dir)])
    assert rescored.exit_code == 0, rescored.output
    rescored_results = json.loads((run_dir / "results.json").read_text())
    assert rescored_results["matrix"] == results["matrix"]
    assert rescored_results.get("extra_scores") == results.get("extra_scores")
    assert rescored_results["as_published"] == results["as_published"]


@pytest.mark.parametrize("sequence,tasks,absent", [
    ("trigap", ["pmcvqa", "docvqa"], {}),
    ("mllm-dcl", ["rs", "med"], {}),
    ("mllm-acl", ["ocr", "math"], {"math": "GPT-4 judge"}),
])
def test_the_newer_streams_run_their_first_two_tasks_with_both_matrices(tmp_path, tiny_llava_dir, sequence, tasks,
                                                                        absent):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, [
        "run", "--method", "seqft", "--sequence", sequence, "--subset", "first-two",
        "--data-root", str(FIXTURES / "published" / sequence), "--model", str(tiny_llava_dir),
        "--steps-per-task", "2", "--batch-size", "2", "--output", str(runs), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    run_dir = runs / sequence / "seqft" / "seed0-first-two"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["tasks"] == tasks
    assert len(results["matrix"]) == 3 and all(len(row) == 2 and None not in row for row in results["matrix"])
    published = results["as_published"]
    stream = load_stream(sequence, subset="first-two")
    assert published["metrics"] == {task.name: task.as_published.metric for task in stream.tasks}
    assert set(published["absent"]) == set(absent)
    for task, reason in absent.items():  # the judge's cell is absent in every row, with its reason; the rest scored
        assert reason in published["absent"][task]
        column = tasks.index(task)
        assert all(row[column] is None for row in published["matrix"])
    assert all(value is not None for row in published["matrix"] for column, value in enumerate(row)
               if tasks[column] not in absent)
    rescored = CliRunner().invoke(app, ["score", str(run_dir)])
    assert rescored.exit_code == 0, rescored.output
    assert json.loads((run_dir / "results.json").read_text())["as_published"] == published
