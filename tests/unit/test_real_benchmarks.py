"""The real streams on hand-made fixture trees in their published layouts: loading, official answer
files, scores against hand-computed values, instruction variants, CIDEr, and `data check`."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mcit_bench.cli import app
from mcit_bench.data.formats import row_to_record
from mcit_bench.data.stream import load_stream
from mcit_bench.errors import ConfigError, DataError
from mcit_bench.models.collate import load_image
from mcit_bench.runner import load_stream_data, task_metric
from mcit_bench.scoring.task_metrics import score_task
from tests.conftest import FIXTURES

COIN = FIXTURES / "coin"


@pytest.fixture(scope="module")
def coin_tests(tmp_path_factory):
    _, test_sets = load_stream_data(load_stream("coin"), COIN, tmp_path_factory.mktemp("cache"))
    return {task: [row_to_record(row) for row in rows] for task, rows in test_sets.items()}


def test_official_answer_files_bring_every_annotator(coin_tests):
    textvqa = {record.id: record for record in coin_tests["textvqa"]}
    assert textvqa["34602"].answers == ("coca cola",) * 3 + ("coke",) * 5 + ("cola", "coca-cola classic")
    vizwiz = {record.id: record for record in coin_tests["vizwiz"]}  # joined by image file name
    assert vizwiz["VizWiz_val_00000002"].answers == ("blue",) * 2 + ("navy",) * 2 + ("dark blue",) * 6
    vqav2 = {record.id: record for record in coin_tests["vqav2"]}
    assert len(vqav2["42000"].answers) == 10 and vqav2["42000"].target == "2"


# (task, predictions in test-file order, task score by hand)
HAND_SCORED = [
    # "The answer is A." names A; "B" is wrong (reference C)
    ("sqa", ["The answer is A.", "B"], 50.0),
    # "Coca-Cola" normalises to "coca cola": 3 of 10 agree -> (3 * 2/3 + 7 * 1) / 10 = 0.9; "23": 9 agree -> 1.0
    ("textvqa", ["Coca-Cola", "23"], 95.0),
    # exact match only: "hot" is not "hot dog", and an empty output never counts
    ("imagenet", ["Goldfish.", "hot"], 50.0),
    # articles drop out in normalisation: "the girl" is "girl"; "woman" is wrong
    ("gqa", ["the girl", "woman"], 50.0),
    # "unanswerable": 6 (+1 with a trailing space) of 10 -> 1.0; "navy": 2 of 10 -> (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    ("vizwiz", ["unanswerable", "navy"], 80.0),
    # IoU 1.0; IoU exactly 0.5 (inclusive); a box overlapping a third -> wrong
    ("grounding", ["[0.25, 0.25, 0.75, 0.50]", "[0.25, 0.375, 0.75, 0.50]", "[0.45, 0.10, 0.75, 0.90]"],
     200 / 3),
    # "two" normalises to "2": 4 + 2 agree -> 1.0; "yes": 2 of 10 -> 0.6
    ("vqav2", ["two", "yes"], 80.0),
    ("ocrvqa", ["no.", "Mom's Family Wall Calendar"], 50.0),
]


@pytest.mark.parametrize("task,predictions,expected", HAND_SCORED, ids=[case[0] for case in HAND_SCORED])
def test_coin_fixtures_score_to_hand_computed_values(coin_tests, task, predictions, expected):
    metric = task_metric(next(t for t in load_stream("coin").tasks if t.name == task))
    score, _ = score_task(metric, predictions, coin_tests[task])
    assert score == pytest.approx(expected)


def test_grounding_boxes_live_on_the_padded_square():
    # a wide 16x8 image becomes 16x16 with 4 rows of padding above: its content spans y 0.25-0.75
    from mcit_bench.models.collate import expand_to_square

    square = expand_to_square(load_image(COIN / "cl_dataset/COCO2014/train2014/COCO_train2014_000000000009.jpg"),
                              (0, 0, 0))
    assert square.size == (16, 16)
    assert square.getpixel((0, 0)) == (0, 0, 0) and square.getpixel((0, 15)) == (0, 0, 0)


@pytest.mark.parametrize("path,mode", [
    ("TextVQA/train_images/0054c91397f2fe05.jpg", "CMYK"),
    ("TextVQA/train_images/003a8ae2ef43b901.png", "RGBA"),
    ("ImageNet/val/n01443537/ILSVRC2012_val_00000001.JPEG", "L"),
    ("GQA/images/2354786.png", "I;16"),
])
def test_images_in_odd_modes_load_as_rgb(path, mode):
    with Image.open(COIN / "cl_dataset" / path) as original:
        assert original.mode == mode
        size = original.size
    image = load_image(COIN / "cl_dataset" / path)
    assert image.mode == "RGB" and image.size == size
    low, high = image.getextrema()[0]
    assert 0 <= low < high <= 255  # 16-bit values scaled, not clipped to white


def test_instruction_variants_choose_the_folder():
    assert load_stream("coin").tasks[0].train == "Instruction_Type1/ScienceQA/train.json"
    diverse = load_stream("coin", variant="diverse")
    assert diverse.tasks[1].test == "Instruction_Type2/TextVQA/test.json"
    assert diverse.tasks[1].annotations.file == "annotations/TextVQA_0.5.1_val.json"
    assert diverse.content_hash() != load_stream("coin").content_hash()
    with pytest.raises(ConfigError, match="has no variant 'fancy'; its variants are original, diverse, ten-types"):
        load_stream("coin", variant="fancy")
    with pytest.raises(ConfigError, match="has no instruction variants"):
        load_stream("synth-coin", variant="diverse")


def test_every_real_stream_is_listed_with_its_tasks():
    output = CliRunner().invoke(app, ["ls", "sequences"]).output
    for name in ("coin@1", "ucit@1", "dmole9@1", "synth-coin@1"):
        assert name in output
    assert [t.name for t in load_stream("ucit").tasks] == [
        "imagenet-r", "arxivqa", "vizwiz-caption", "iconqa", "clevr-math", "flickr30k"]
    assert len(load_stream("dmole9").tasks) == 9 and load_stream("dmole9").tasks[1].type == "grounding"


def test_cider_on_a_split_by_hand():
    from mcit_bench.data.records import Record

    # two images with disjoint words: an output equal to all of its three-word references has cosine 1
    # for 1-, 2- and 3-grams, no 4-gram at all and no length penalty, so CIDEr-D = 10 x (1 + 1 + 1 + 0) / 4
    # = 7.5 per sample (750 as a task score); punctuation and case go in tokenisation
    records = [Record("1", "", "", ("two dogs run", "two dogs run"), "caption"),
               Record("2", "", "", ("a red bus", "a red bus"), "caption")]
    score, per_sample = score_task("cider", ["two dogs run", "A red bus."], records)
    assert per_sample == pytest.approx([7.5, 7.5]) and score == pytest.approx(750.0)
    score, per_sample = score_task("cider", ["two dogs run", ""], records)
    assert per_sample == pytest.approx([7.5, 0.0]) and score == pytest.approx(375.0)


def broken_copy(tmp_path: Path) -> Path:
    """The CoIN fixtures with one problem of each kind planted."""
    root = tmp_path / "coin"
    shutil.copytree(COIN, root)
    (root / "cl_dataset/GQA/images/2375429.png").unlink()  # a missing image
    (root / "cl_dataset/OCR-VQA/images/1000016.jpg").write_bytes(b"not a jpeg")  # an unreadable image
    train = root / "Instruction_Type1/ScienceQA/train.json"
    records = json.loads(train.read_text())
    records[1]["conversations"][0]["value"] = "<image>\n" + records[1]["conversations"][0]["value"]  # two tags
    train.write_text(json.dumps(records))
    answers = root / "annotations/TextVQA_0.5.1_val.json"
    data = json.loads(answers.read_text())
    data["data"][0]["answers"] = data["data"][0]["answers"][:7]  # fewer than ten annotators
    answers.write_text(json.dumps(data))
    test = root / "Instruction_Type1/VQAv2/test.json"
    records = json.loads(test.read_text())
    records[1]["question_id"] = 77  # no entry in the official answer file
    test.write_text(json.dumps(records))
    return root


def test_data_check_lists_every_problem_at_once(tmp_path):
    root = broken_copy(tmp_path)
    result = CliRunner().invoke(app, ["data", "check", "coin", "--data-root", str(root)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "1 images are missing" in text and "2375429.png" in text
    assert "1000016.jpg: unreadable" in text
    assert "has 2 '<image>' tags in the first human turn; exactly 1 expected" in text
    assert "record '34602' has 7 annotator answers" in text
    assert "1 test records have no entry in the annotation file (first: 77)" in text
    assert "images are published at https://ocr-vqa.github.io" in text
    assert CliRunner().invoke(app, ["data", "check", "coin", "--data-root", str(COIN)]).exit_code == 0


def test_a_run_refuses_fewer_than_ten_annotators(tmp_path):
    root = broken_copy(tmp_path)
    stream = load_stream("coin", subset=None)
    textvqa = next(task for task in stream.tasks if task.name == "textvqa")
    from dataclasses import replace

    with pytest.raises(DataError, match="has 7 annotator answers; the VQA accuracy needs all 10"):
        load_stream_data(replace(stream, tasks=(textvqa,)), root, tmp_path / "cache")


def test_ucit_captions_come_from_the_coco_caption_file(tmp_path):
    _, test_sets = load_stream_data(load_stream("ucit"), FIXTURES / "ucit", tmp_path / "cache")
    captions = {row["id"]: row["answers"] for row in test_sets["vizwiz-caption"]}
    assert captions["20"] == ["A white mug on a wooden table.", "A white coffee mug sits on a table.",
                              "white cup on wood"]
    assert len(test_sets["flickr30k"][0]["answers"]) == 5
    records = [row_to_record(row) for row in test_sets["vizwiz-caption"]]
    _, per_sample = score_task("cider", ["", "A blurry photo of a ceiling light."], records)
    assert per_sample[0] == 0.0 and per_sample[1] > 0.0


def test_bleu4_beside_cider_is_the_corpus_score():
    from mcit_bench.data.records import Record
    from mcit_bench.scoring.captions import bleu4_corpus

    records = [Record("1", "", "", ("two brown dogs run fast",), "caption"),
               Record("2", "", "", ("a red bus on the road",), "caption")]
    # every n-gram of every output is in its reference and the lengths match: BLEU-4 = 1 (x100)
    assert bleu4_corpus(["two brown dogs run fast", "a red bus on the road"], records) == pytest.approx(100.0)
    assert bleu4_corpus(["cats", "green"], records) == pytest.approx(0.0, abs=1e-3)
