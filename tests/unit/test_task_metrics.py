"""Per-task metrics on hand-computed cases; garbage never scores."""

import pytest

from mcit_bench.core.records import Record
from mcit_bench.scoring.task_metrics import METRICS, score_task, vqa_soft_accuracy


def test_vqa_soft_accuracy_leave_one_out():
    assert vqa_soft_accuracy("yes", ["yes"] * 4 + ["no"] * 6) == pytest.approx(1.0)
    # 2 of 10 agree: 2 subsets see 1 match (1/3), 8 subsets see 2 (2/3)
    assert vqa_soft_accuracy("red", ["red"] * 2 + ["blue"] * 8) == pytest.approx((2 / 3 + 8 * 2 / 3) / 10)
    # normalisation applies to both sides: "2" matches "two"
    assert vqa_soft_accuracy("2", ["two"] * 3 + ["three"] * 7) == pytest.approx((3 * 2 / 3 + 7) / 10)
    assert vqa_soft_accuracy("cat", ["cat"] + ["dog"] * 9) == pytest.approx(0.3)
    assert vqa_soft_accuracy("Dog.", ["dog"]) == 1.0  # a single reference is exact match


# (output, ten references, the official VQA evaluator's score): outputs the EvalAI normalisation
# empties are matched against references it empties too, as the official evaluator does
EMPTIED_BY_NORMALISATION = [
    ("a", ["a"] * 10, 1.0),  # the letter "a" read off a sign (TextVQA): an article to the normaliser
    ("The", ["the"] * 4 + ["sign"] * 6, 1.0),
    ("a", ["a"] * 2 + ["b"] * 8, (2 / 3 + 8 * 2 / 3) / 10),
    ("the", ["yes"] * 10, 0.0),
    ("...", ["..."] + ["dots"] * 9, 0.3),
    ("", ["a"] * 10, 0.0),  # an empty output never scores
    ("   ", ["the"] * 10, 0.0),
]


@pytest.mark.parametrize("output,references,expected", EMPTIED_BY_NORMALISATION)
def test_outputs_the_normalisation_empties_score_as_the_official_evaluator(output, references, expected):
    assert vqa_soft_accuracy(output, references) == pytest.approx(expected)


def test_exact_match_is_never_a_substring_match():
    record = Record("1", "", "", ("golden retriever",), "classification")
    _, scores = score_task("exact_match", ["golden retriever", "retriever", "a golden retriever dog"], [record] * 3)
    assert scores == [1.0, 0.0, 0.0]


GARBAGE = ["", " ", "a", "the", "I cannot see", "[", "unknown garbage text ###", "..."]
RECORDS = {
    "vqa_accuracy": Record("1", "", "", ("yes",) * 10, "vqa"),
    "exact_match": Record("2", "", "", ("circle",), "classification"),
    "anls": Record("6", "", "", ("circle", "a circle"), "short_answer"),
    "relaxed_accuracy": Record("7", "", "", ("12.5",), "short_answer"),
    "option_accuracy": Record("3", "", "", ("A",), "multiple_choice", {"options": ["cat", "dog"]}),
    "grounding_iou50": Record("4", "", "", ("[0.00, 0.00, 1.00, 1.00]",), "grounding", {"size": [64, 64]}),
    "cider": Record("5", "", "", ("two dogs play in snow", "dogs playing in snow"), "caption"),
}
# a second, well-answered sample in the split: caption metrics weigh words by the whole split
COMPANION = Record("c", "", "", ("a man rides a red bicycle", "a cyclist on a red bike"), "caption")


@pytest.mark.parametrize("metric", sorted(RECORDS))
@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_never_scores(metric, garbage):
    record = RECORDS[metric]
    companion = COMPANION if record.task_type == "caption" else record
    _, scores = score_task(metric, [garbage, companion.answers[0]], [record, companion])
    assert scores[0] == 0.0


def test_every_registered_metric_is_covered_by_the_garbage_test():
    assert sorted(RECORDS) == METRICS.names()


def test_grounding_threshold_is_inclusive():
    record = Record("g", "", "", ("[0.00, 0.00, 1.00, 1.00]",), "grounding")
    assert score_task("grounding_iou50", ["[0.00, 0.00, 0.50, 1.00]"], [record])[0] == 100.0  # IoU exactly 0.5
    assert score_task("grounding_iou50", ["[0.00, 0.00, 0.49, 1.00]"], [record])[0] == 0.0


def test_task_score_is_a_percentage_of_samples():
    records = [Record(str(i), "", "", ("B",), "multiple_choice") for i in range(4)]
    score, per_sample = score_task("option_accuracy", ["B", "(B)", "C", ""], records)
    assert per_sample == [1.0, 1.0, 0.0, 0.0]
    assert score == 50.0
