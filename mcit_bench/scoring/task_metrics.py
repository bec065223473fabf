"""Per-task metrics: the cell values of the accuracy matrix, each in 0-100.

Every metric gives each prediction a score (most score it alone; caption metrics need the whole
split); a task's score is the mean over its test split, x100. An empty (whitespace-only) or
unparseable prediction scores zero under every metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mcit_bench.core.records import Record
from mcit_bench.core.registry import Registry
from mcit_bench.scoring.answers import box_iou, levenshtein, normalize_answer, parse_box, parse_option_letter
from mcit_bench.scoring.captions import bleu4_corpus, cider_scores, require_caption_tools

IOU_THRESHOLD = 0.5
ANLS_THRESHOLD = 0.5  # DocVQA's tau: a normalised edit distance of 0.5 or more scores zero
RELAXED_TOLERANCE = 0.05  # ChartQA: a number within 5% of the reference is right

SampleScorer = Callable[[str, Record], float]
SplitScorer = Callable[[Sequence[str], Sequence[Record]], list[float]]


@dataclass(frozen=True)
class TaskMetric:
    name: str
    description: str
    score_all: SplitScorer  # per-sample scores of a whole split's predictions
    bounded: bool = True  # per-sample scores lie in 0-1 (CIDEr does not)
    preflight: Callable[[], None] = lambda: None  # raises MetricError when the metric cannot run here


def one_at_a_time(score_sample: SampleScorer) -> SplitScorer:
    """A split scorer from a metric that scores each prediction on its own."""
    return lambda predictions, records: [score_sample(p, r) for p, r in zip(predictions, records)]


METRICS: Registry[TaskMetric] = Registry("metric")


def vqa_soft_accuracy(prediction: str, references: Sequence[str]) -> float:
    """The official VQA accuracy: min(1, agreeing / 3) averaged over leave-one-out annotator subsets.

    With a single reference this is normalised exact match (the leave-one-out form would always
    give zero there). An empty output (nothing but whitespace) never scores; an output the
    normalisation empties ("the", the letter "a") is scored as the official evaluator scores it,
    against references it empties too.
    """
    if not prediction.strip():
        return 0.0
    answer = normalize_answer(prediction)
    normalised = [normalize_answer(reference) for reference in references]
    if len(normalised) == 1:
        return float(answer == normalised[0])
    total = 0.0
    for left_out in range(len(normalised)):
        agreeing = sum(1 for i, ref in enumerate(normalised) if i != left_out and ref == answer)
        total += min(1.0, agreeing / 3.0)
    return total / len(normalised)


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """Normalised exact match with any reference; never a substring match. As in ``vqa_soft_accuracy``,
    an empty output never scores and one the normalisation empties matches only a reference it empties."""
    if not prediction.strip():
        return 0.0
    answer = normalize_answer(prediction)
    return float(any(answer == normalize_answer(ref) for ref in references))


def option_accuracy(prediction: str, record: Record) -> float:
    options = record.metadata.get("options")
    chosen = parse_option_letter(prediction, options)
    return float(chosen is not None and chosen == record.target.strip().upper())


def grounding_accuracy(prediction: str, record: Record) -> float:
    """IoU >= 0.5 in the task's box convention (``metadata['boxes']``: padded_square, pixel or thousand);
    both boxes are in that one frame, and IoU does not change with a frame's scale per axis."""
    convention = record.metadata.get("boxes", "padded_square")
    size = tuple(record.metadata["size"]) if "size" in record.metadata else None
    predicted = parse_box(prediction, convention, size)
    reference = tuple(record.metadata["box"]) if "box" in record.metadata else parse_box(record.target, convention,
                                                                                          size)
    if predicted is None or reference is None:
        return 0.0
    return float(box_iou(predicted, reference) >= IOU_THRESHOLD)


def anls(prediction: str, references: Sequence[str]) -> float:
    """Average normalised Levenshtein similarity as DocVQA and InfographicVQA define it (Biten et al.
    2019; the RRC evaluator): both sides lower-cased with whitespace collapsed, similarity 1 - NL where
    NL = distance / longer length, zero once NL reaches 0.5, the best reference counts."""
    if not prediction.strip():
        return 0.0
    answer = " ".join(prediction.lower().split())
    best = 0.0
    for reference in references:
        target = " ".join(reference.lower().split())
        distance = levenshtein(answer, target) / max(len(answer), len(target), 1)
        best = max(best, 1.0 - distance if distance < ANLS_THRESHOLD else 0.0)
    return best


def _chartqa_number(text: str) -> float | None:
    try:
        return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_accuracy(prediction: str, references: Sequence[str]) -> float:
    """ChartQA's relaxed accuracy (Masry et al. 2022, as pix2struct's ``relaxed_correctness``
    computes it): a number within 5% of a non-zero numeric reference ("12%" read as 0.12), otherwise
    case-insensitive exact match; outputs and references are stripped first."""
    answer = prediction.strip()
    if not answer:
        return 0.0
    for reference in references:
        target = reference.strip()
        predicted, expected = _chartqa_number(answer), _chartqa_number(target)
        if predicted is not None and expected:
            if abs(predicted - expected) / abs(expected) <= RELAXED_TOLERANCE:
                return 1.0
        elif answer.lower() == target.lower():
            return 1.0
    return 0.0


METRICS.add("vqa_accuracy", TaskMetric(
    "vqa_accuracy", "official VQA soft accuracy over the annotators' answers",
    one_at_a_time(lambda prediction, record: vqa_soft_accuracy(prediction, record.answers))))
METRICS.add("exact_match", TaskMetric(
    "exact_match", "exact match after the official VQA normalisation",
    one_at_a_time(lambda prediction, record: exact_match(prediction, record.answers))))
METRICS.add("option_accuracy", TaskMetric(
    "option_accuracy", "accuracy of the option letter parsed from the output", one_at_a_time(option_accuracy)))
METRICS.add("grounding_iou50", TaskMetric(
    "grounding_iou50", f"box parsed from the output has IoU >= {IOU_THRESHOLD} with the reference",
    one_at_a_time(grounding_accuracy)))
METRICS.add("anls", TaskMetric(
    "anls", f"average normalised Levenshtein similarity, zero from a distance of {ANLS_THRESHOLD} (DocVQA)",
    one_at_a_time(lambda prediction, record: anls(prediction, record.answers))))
METRICS.add("relaxed_accuracy", TaskMetric(
    "relaxed_accuracy", f"numbers within {RELAXED_TOLERANCE:.0%} of the reference, else exact match (ChartQA)",
    one_at_a_time(lambda prediction, record: relaxed_accuracy(prediction, record.answers))))
METRICS.add("cider", TaskMetric(
    "cider", "CIDEr-D over the split (pycocoevalcap, PTB-tokenised), x100", cider_scores, bounded=False,
    preflight=require_caption_tools))

# Reported beside a task type's cell value, never in the matrix: split-level scores in 0-100.
CompanionScorer = Callable[[Sequence[str], Sequence[Record]], float]
COMPANION_METRICS: dict[str, dict[str, CompanionScorer]] = {"caption": {"bleu4": bleu4_corpus}}

def score_task(metric_name: str, predictions: Sequence[str], records: Sequence[Record]) -> tuple[float, list[float]]:
    """(task score, 0-100 for bounded metrics; per-sample scores, 0-1 for bounded metrics)."""
    if len(predictions) != len(records):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} records")
    per_sample = METRICS.get(metric_name).score_all(predictions, records)
    return (100.0 * sum(per_sample) / len(per_sample) if per_sample else 0.0), per_sample


def score_references(metric_name: str, predictions: Sequence[str], references: Sequence[Sequence[str]],
                     metadata: Sequence[dict] | None = None) -> float:
    """A task score (0-100) from plain inputs, as the ``evaluate`` modules take them: ``references[i]``
    the sample's reference answers (one or several), ``metadata[i]`` what the metric reads beyond text
    (``options`` of a multiple-choice question, ``size`` and ``boxes`` of a grounding one)."""
    extra = list(metadata) if metadata is not None else [{}] * len(references)
    if not len(predictions) == len(references) == len(extra):
        raise ValueError(f"{len(predictions)} predictions, {len(references)} references and {len(extra)} "
                         f"metadata entries: give one of each per sample")
    records = [Record(str(index), "", "", tuple(answers), "", dict(meta or {}))
               for index, (answers, meta) in enumerate(zip(references, extra))]
    return score_task(metric_name, predictions, records)[0]


def check_metric_names(tasks) -> None:
    """Every metric the tasks of a stream name, sound and as published, is one this harness has; an
    unknown name is one sentence (the stream's files hold names only: mcit_bench.data never imports
    scoring)."""
    from mcit_bench.scoring.published import PUBLISHED_METRICS

    for task in tasks:
        METRICS.get(task.metric_name)
        if task.as_published is not None:
            PUBLISHED_METRICS.get(task.as_published.metric)
