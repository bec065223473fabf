"""The metrics as Hugging Face ``evaluate`` modules (issue 33): each loads with evaluate.load from its folder
in the package with the network off, and gives exactly the harness's numbers on hand-computed cases."""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest

# evaluate reads its cache folders when imported: a fresh one, and no network, before it is
os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="mcit-evaluate-modules-")
os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"

import evaluate  # noqa: E402

import mcit_bench  # noqa: E402
from mcit_bench.core.records import Record  # noqa: E402
from mcit_bench.scoring.continual import summarize  # noqa: E402
from mcit_bench.scoring.task_metrics import score_task  # noqa: E402

TEN = ["two"] * 3 + ["three"] * 7
# (metric, predictions, references, metadata keywords, records as the harness scores them, hand value)
CASES = [
    ("vqa_accuracy", ["2", "red", "Dog."], [TEN, ["red"] * 2 + ["blue"] * 8, ["dog"]], {},
     [Record("a", "", "", tuple(TEN), "vqa"), Record("b", "", "", ("red",) * 2 + ("blue",) * 8, "vqa"),
      Record("c", "", "", ("dog",), "vqa")],
     100 * ((3 * 2 / 3 + 7) / 10 + (2 / 3 + 8 * 2 / 3) / 10 + 1.0) / 3),
    ("exact_match", ["golden retriever", "retriever", "the girl"], [["golden retriever"]] * 2 + [["girl"]], {},
     [Record("a", "", "", ("golden retriever",), "classification")] * 2
     + [Record("c", "", "", ("girl",), "short_answer")], 100 * 2 / 3),
    # "j smith" against "j. smith": 1 - 1/8; "12" against "1234": a distance of 0.5 scores nothing
    ("anls", ["J Smith", "12"], [["J. Smith"], ["1234", "1,234"]], {},
     [Record("a", "", "", ("J. Smith",), "short_answer"), Record("b", "", "", ("1234", "1,234"), "short_answer")],
     100 * 0.875 / 2),
    ("relaxed_accuracy", ["12.9", "13.2", "Yes"], [["12.5"], ["12.5"], ["yes"]], {},
     [Record(str(i), "", "", (answer,), "short_answer") for i, answer in enumerate(["12.5", "12.5", "yes"])],
     100 * 2 / 3),
    ("option_accuracy", ["B", "(B)", "dog", ""], ["B", "B", "B", "B"], {"options": [["cat", "dog"]] * 4},
     [Record(str(i), "", "", ("B",), "multiple_choice", {"options": ["cat", "dog"]}) for i in range(4)], 75.0),
    ("grounding_iou50", ["[0.00, 0.00, 0.50, 1.00]", "[0.00, 0.00, 0.49, 1.00]"], ["[0.00, 0.00, 1.00, 1.00]"] * 2,
     {}, [Record("g", "", "", ("[0.00, 0.00, 1.00, 1.00]",), "grounding")] * 2, 50.0),
]


def load(name: str):
    return evaluate.load(mcit_bench.metric_module(name))


@pytest.mark.parametrize("name,predictions,references,metadata,records,expected", CASES, ids=[c[0] for c in CASES])
def test_a_task_metric_module_gives_the_harness_score(name, predictions, references, metadata, records, expected):
    harness, _ = score_task(name, predictions, records)
    assert harness == pytest.approx(expected)
    result = load(name).compute(predictions=predictions, references=references, **metadata)
    assert result == {name: pytest.approx(harness, abs=1e-12)}


def test_the_continual_module_gives_the_harness_summary():
    matrix = [[0.0, 10.0, 0.0], [80.0, 10.0, 10.0], [60.0, 70.0, 10.0], [50.0, 55.0, 60.0]]
    result = load("continual").compute(matrix_rows=matrix)
    assert result == pytest.approx(summarize(np.array(matrix)))
    assert result["final_acc"] == pytest.approx(55.0) and result["bwt"] == pytest.approx(((50 - 80) + (55 - 70)) / 2)


@pytest.mark.skipif(shutil.which("java") is None, reason="CIDEr's tokenizer needs Java (CI installs it)")
def test_the_cider_module_gives_the_harness_score():
    references = [["two dogs play in snow", "dogs playing in snow"], ["a man rides a red bicycle", "a cyclist"]]
    predictions = ["two dogs play in the snow", "a man on a red bicycle"]
    records = [Record(str(i), "", "", tuple(answers), "caption") for i, answers in enumerate(references)]
    harness, _ = score_task("cider", predictions, records)
    assert load("cider").compute(predictions=predictions, references=references) == {
        "cider": pytest.approx(harness, abs=1e-9)}


def test_an_unknown_module_or_keyword_is_one_sentence():
    with pytest.raises(mcit_bench.ConfigError, match="unknown metric module 'bleu': the modules are vqa_accuracy"):
        mcit_bench.metric_module("bleu")
    with pytest.raises(ValueError, match="vqa_accuracy takes no options"):
        load("vqa_accuracy").compute(predictions=["a"], references=[["a"]], options=[["x"]])
    with pytest.raises(ValueError, match="options has 1 entries for 2 predictions"):
        load("option_accuracy").compute(predictions=["A", "B"], references=["A", "B"], options=[["x", "y"]])
