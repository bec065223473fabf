"""A task read from a Hugging Face dataset in instruction form (local parquet, images inside)."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mcit_bench.cli import app
from mcit_bench.core.errors import DataError
from mcit_bench.data.run_data import load_stream_data
from mcit_bench.data.splits import row_to_record
from mcit_bench.data.stream import load_stream
from mcit_bench.scoring.task_metrics import score_task


def write_parquet_dataset(folder):
    """The Hub's layout for a parquet dataset: data/<split>-00000-of-00001.parquet, images embedded."""
    import datasets

    rng = np.random.default_rng(0)
    features = datasets.Features({"qid": datasets.Value("string"), "picture": datasets.Image(),
                                  "prompt": datasets.Value("string"),
                                  "labels": datasets.Sequence(datasets.Value("string"))})
    for split, count in (("train", 3), ("test", 2)):
        rows = {"qid": [f"{split}-{i}" for i in range(count)],
                "picture": [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(count)],
                "prompt": ["What colour is the square?"] * count,
                "labels": [["red"] * 7 + ["dark red"] * 3] * count}
        (folder / "data").mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(
            str(folder / "data" / f"{split}-00000-of-00001.parquet"))


def write_sequence(path, columns, dataset="colours"):
    path.write_text(json.dumps({
        "name": "hub-task", "version": 1, "description": "one task from a parquet dataset",
        "source": {"kind": "files"}, "steps_per_task": 2,
        "tasks": [{"name": "colours", "type": "vqa", "train": "train", "test": "test",
                   "hub": {"dataset": dataset, "columns": columns}}]}))
    return str(path)


COLUMNS = {"id": "qid", "image": "picture", "instruction": "prompt", "answers": "labels"}


def test_a_parquet_dataset_becomes_records_with_image_files(tmp_path):
    write_parquet_dataset(tmp_path / "data" / "colours")
    stream = load_stream(write_sequence(tmp_path / "hub.yaml", COLUMNS))
    train, test = load_stream_data(stream, tmp_path / "data", tmp_path / "cache")
    assert len(train["colours"]) == 3 and len(test["colours"]) == 2
    record = row_to_record(test["colours"][0])
    assert record.id == "test-0" and record.instruction == "What colour is the square?"
    assert record.answers == ("red",) * 7 + ("dark red",) * 3 and row_to_record(train["colours"][0]).target == "red"
    with Image.open(record.image) as image:  # written once under the cache, a PNG like any other source
        assert image.size == (8, 8) and record.image.startswith(str(tmp_path / "cache"))
    # "red": 7 of 10 agree, 1.0; "dark red": 3 agree, (3 * 2/3 + 7 * 1) / 10 = 0.9
    assert score_task("vqa_accuracy", ["red", "dark red"], [row_to_record(r) for r in test["colours"]])[0] == 95.0


def test_a_wrong_column_mapping_is_named(tmp_path):
    write_parquet_dataset(tmp_path / "data" / "colours")
    stream = load_stream(write_sequence(tmp_path / "hub.yaml", {**COLUMNS, "instruction": "question"}))
    with pytest.raises(DataError, match="has no column 'question' .*fix the task's hub.columns"):
        load_stream_data(stream, tmp_path / "data", tmp_path / "cache")
    result = CliRunner().invoke(app, ["data", "check", str(tmp_path / "hub.yaml"),
                                      "--data-root", str(tmp_path / "data")])
    assert result.exit_code == 1 and "has no column 'question'" in " ".join(result.output.split())


def test_a_dataset_that_is_not_there_says_so(tmp_path):
    (tmp_path / "data").mkdir()
    absent = "mcit-bench-absent/dataset"  # neither a folder under the data root nor in the local Hub cache
    stream = load_stream(write_sequence(tmp_path / "hub.yaml", COLUMNS, absent))
    with pytest.raises(DataError, match=f"Hugging Face dataset '{absent}' split 'train' cannot be read"):
        load_stream_data(stream, tmp_path / "data", tmp_path / "cache")
