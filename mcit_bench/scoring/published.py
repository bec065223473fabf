"""Each source's own evaluation rule, transcribed rule for rule, quirks included: the ``as_published`` matrix.

The sound metrics (``task_metrics``) make the accuracy matrix; these reproduce what CoIN's,
MCITlib's and D-MoLE's scripts print, so a run can be set beside a paper's table and the effect of
the paper's protocol seen. Each rule cites the script it transcribes (paths in the source's
repository; docs/METHODS.md lists every difference from the sound metric). A rule scores a whole
split: ``(predictions, records) -> task score in 0-100``. Whatever an official file adds (ScienceQA's
answer index, GQA's balanced flag) was joined into ``metadata["published"]`` when the test split was
read (``mcit_bench.data.published``); where a file was absent, the rule falls back as its
description says.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np

from mcit_bench.core.records import Record
from mcit_bench.core.registry import Registry
from mcit_bench.scoring.answers import levenshtein, normalize_answer

SplitRule = Callable[[Sequence[str], Sequence[Record]], float]


class Absent(Exception):
    """The source's script gives this split no score (it stops, or its input file is missing): the
    cell is absent from the as-published matrix, with this reason."""


@dataclass(frozen=True)
class PublishedMetric:
    name: str
    source: str  # the script this rule transcribes
    description: str
    score: SplitRule
    needs_caption_tools: bool = False
    # why the cell is absent when the task's answer file is (None: the rule falls back without it)
    absent_without_references: str | None = None
    # why the cell is always absent (the source scores with a judge model or a server)
    always_absent: str | None = None


PUBLISHED_METRICS: Registry[PublishedMetric] = Registry("published metric")


def mean_percent(scores: Sequence[float]) -> float:
    return 100.0 * sum(scores) / len(scores) if scores else 0.0


def per_sample(rule: Callable[[str, Record], float]) -> SplitRule:
    return lambda predictions, records: mean_percent([rule(p, r) for p, r in zip(predictions, records)])


def source_answer(record: Record) -> str:
    """The test file's own answer (kept aside when an official answer file replaced the references)."""
    return record.metadata.get("source_answer", record.target)


# ---------------------------------------------------------------- shared by several sources
def m4c_accuracy(prediction: str, references: Sequence[str]) -> float:
    """m4c's TextVQAAccuracyEvaluator (CoIN ``ETrain/Eval/LLaVA/CoIN/m4c_evaluator.py`` lines 225-257,
    D-MoLE ``eval/vqa/textvqa_eval.py``): the EvalAI processor on both sides, each distinct reference
    scored by leave-one-out min(1, matches / 3), the prediction gets its reference's score. No guard
    for an empty answer: an output the processor empties matches references it empties too. The
    script asserts ten references; with any other count we fall back to processed exact match."""
    answer = normalize_answer(prediction)
    processed = [normalize_answer(reference) for reference in references]
    if len(processed) != 10:
        return float(answer in processed)
    total = 0.0
    for left_out in range(len(processed)):
        total += min(1.0, sum(1 for i, ref in enumerate(processed) if i != left_out and ref == answer) / 3)
    return total / len(processed)


def upper_case_exact(prediction: str, record: Record) -> float:
    """``pred.upper() == ground_truth.upper()`` against the test file's single answer: CoIN
    ``eval_vizwiz.py`` line 28 and ``eval_vqav2.py`` line 28 (ten annotators ignored), MCITlib
    ``LoRA-FT/llava/eval/CoIN/eval_deepseek_r1.py`` (UCIT's non-caption tasks)."""
    return float(prediction.upper() == source_answer(record).upper())


# ---------------------------------------------------------------- CoIN (zackschen/CoIN, ETrain/Eval/LLaVA/CoIN/)
_SINGLE_CHARACTER = re.compile(r"\b(\w)\b")
_COIN_OPTIONS = ["A", "B", "C", "D", "E"]  # a list, as the script's --options default: membership is exact


def coin_scienceqa(prediction: str, record: Record) -> float:
    """``eval_science_qa.py`` lines 65-92: the output itself if it is a letter A-E; else its first
    character when followed by ". "; else the first single-character word, upper-cased (so the
    article "a" reads as A). It counts when that letter's index, among the first ``len(choices)``
    letters, is the problem's answer index; an output with no such letter (empty, "AB") is wrong.
    Without problems.json the answer letter and the number of options come from the test record."""
    if prediction in _COIN_OPTIONS:
        letter = prediction
    elif len(prediction) >= 3 and prediction[0] in _COIN_OPTIONS and prediction[1:3] == ". ":
        letter = prediction[0]
    else:
        found = _SINGLE_CHARACTER.findall(prediction)
        letter = found[0].upper() if found else "FAILED"
    published = record.metadata.get("published")
    if published is not None:
        answer, choices = published["answer"], published["choices"]
    else:
        target = record.target.strip().upper()
        answer = _COIN_OPTIONS.index(target) if len(target) == 1 and target in _COIN_OPTIONS else -2
        choices = len(record.metadata.get("options") or _COIN_OPTIONS)
    return float(letter in _COIN_OPTIONS[:choices] and _COIN_OPTIONS.index(letter) == answer)


def coin_textvqa(prediction: str, record: Record) -> float:
    """``eval_textvqa.py`` lines 36-49: m4c accuracy against TextVQA_0.5.1_val.json's ten answers."""
    return m4c_accuracy(prediction, record.answers)


def coin_imagenet(prediction: str, record: Record) -> float:
    """``eval_ImagetNet.py`` line 26: correct when the label is inside the output or the output
    inside the label (an empty output is inside every label)."""
    label = source_answer(record)
    return float(label in prediction or prediction in label)


def coin_gqa(predictions: Sequence[str], records: Sequence[Record]) -> float:
    """``convert_gqa_for_eval.py`` line 14 (trailing periods dropped, lower case) and ``eval_gqa.py``
    (exact match with the question file's answer, averaged over balanced questions only). Without
    the question file every question counts, against the test file's answer."""
    scores = []
    for prediction, record in zip(predictions, records):
        published = record.metadata.get("published", {"answer": source_answer(record), "balanced": True})
        if published["balanced"]:
            scores.append(float(prediction.rstrip(".").lower() == published["answer"]))
    return mean_percent(scores)


def coin_grounding_box(prediction: str) -> list[float] | None:
    """``eval_grounding.py`` lines 68-75: brackets removed, then the first and last characters cut
    (``pred_bbox[1:-1]``), the rest split at commas; four numbers or the sample counts as wrong.
    The cut eats the first digit of x1 and the last of y2 in a plain ``[x1, y1, x2, y2]``."""
    text = prediction.replace("[", "").replace("]", "")
    try:
        values = [float(value) for value in text[1:-1].split(",")]
    except ValueError:
        return None
    return values if len(values) == 4 else None


def coin_grounding_iou(a: list[float], b: list[float]) -> float:
    """``eval_grounding.py`` ``calculate_iou`` as written: no clamp of a box's own width or height."""
    x1, y1, x2, y2 = a
    x21, y21, x22, y22 = b
    intersection = max(0, min(x2, x22) - max(x1, x21)) * max(0, min(y2, y22) - max(y1, y21))
    union = (x2 - x1) * (y2 - y1) + (x22 - x21) * (y22 - y21) - intersection
    return intersection / union if union > 0 else 0


def coin_grounding(prediction: str, record: Record) -> float:
    """``eval_grounding.py`` lines 62-84: the reference from ``answer_bbox``, both boxes multiplied
    by the image's longer side (the same IoU in exact arithmetic, not always in floating point: a
    box at exactly 0.5 may pass), correct when IoU > 0.5 (strictly)."""
    predicted = coin_grounding_box(prediction)
    if predicted is None:
        return 0.0
    reference = [float(v) for v in record.target.replace("[", "").replace("]", "").split(",")]
    longer = max(record.metadata["size"])
    return float(coin_grounding_iou([v * longer for v in predicted], [v * longer for v in reference]) > 0.5)


def coin_ocrvqa(prediction: str, record: Record) -> float:
    """``eval_ocrvqa.py`` lines 27-30: an output containing 'Unanswerable' is wrong; otherwise
    case-insensitive exact match."""
    if "Unanswerable" in prediction:
        return 0.0
    return float(prediction.lower() == source_answer(record).lower())


# ---------------------------------------------------------------- MCITlib (Ghy0501/MCITlib, UCIT)
MCITLIB_CAPTION_FILE_ABSENT = (
    "MCITlib scores captions only against a COCO caption file (eval_caption.py --annotation-file, which its "
    "Eval_UCIT/eval_flickr30k.sh and eval_vizwiz.sh fill from a data config's anno_path, a key none of its "
    "configs/data_configs/UCIT/*.json defines); the task's caption file is absent under --data-root, so no "
    "score of MCITlib's exists to reproduce")


def mcitlib_caption(predictions: Sequence[str], records: Sequence[Record]) -> float:
    """``LoRA-FT/llava/eval/CoIN/eval_caption.py`` lines 79-96: pycocoevalcap's BLEU-1..4, METEOR,
    ROUGE-L and CIDEr (x100) against the COCO caption file (joined by position, its rule), and
    their plain average, which UCIT's tables report. Without that file the cell is absent."""
    from mcit_bench.scoring.captions import coco_caption_scores

    if not all(record.metadata.get("references") for record in records):
        raise Absent(MCITLIB_CAPTION_FILE_ABSENT)
    scores = coco_caption_scores(predictions, records)
    return sum(scores.values()) / len(scores)


# ---------------------------------------------------------------- Prism (LAMDA-CL/Prism, TriGap)
def prism_anls(prediction: str, record: Record) -> float:
    """``backbone/shared/eval/eval_ucit.py`` lines 38-52 (``anls_single``): both sides stripped, the
    distance on lower case over the longer length, the best answer counts, and no threshold (DocVQA's
    ANLS zeroes a distance of 0.5 or more); an empty output matches only an empty answer."""
    answer = prediction.strip()
    best = 0.0
    for reference in record.answers:
        target = reference.strip()
        if not answer or not target:
            score = float(answer == target)
        else:
            score = 1.0 - levenshtein(answer.lower(), target.lower()) / max(len(answer), len(target))
        best = max(best, score)
    return best


# ---------------------------------------------------------------- MLLM-CL (bjzhb666/MLLM-CL; MCITlib's copies)
_UNANSWERABLE = "Unanswerable"  # each script skips such an output, yet divides by every result


def mllm_cl_ai2d(prediction: str, record: Record) -> float:
    """``ETrain/Eval/LLaVA/CoIN/eval_ai2d.py`` lines 30-50 (MCITlib ``LoRA-FT/llava/eval/CoIN/eval_ai2d.py``,
    remote sensing and driving): lower case; an answer with a space must occur in the output; a
    one-word answer loses its periods and must occur in a one-word output, or in a longer one with a
    space before it or a space, period or comma after it."""
    if _UNANSWERABLE in prediction:
        return 0.0
    answer, target = prediction.lower(), source_answer(record).lower()
    if " " in target:
        return float(target in answer)
    target = target.replace(".", "")
    if " " in answer:
        return float(any(piece in answer for piece in (" " + target, target + " ", target + ".", target + ",")))
    return float(target in answer)


def mllm_cl_pvqa(prediction: str, record: Record) -> float:
    """``eval_pvqa.py`` lines 25-31 (medical): the lower-cased answer anywhere in the lower-cased output."""
    if _UNANSWERABLE in prediction:
        return 0.0
    return float(source_answer(record).lower() in prediction.lower())


_SCI_EXACT_SOURCES = ("AI2D", "TQA", "VQA", "SciVerse")  # eval_sci.py line 37: the image name's prefix


def mllm_cl_sci(prediction: str, record: Record) -> float:
    """``eval_sci.py`` lines 29-57 (science): an image named ``AI2D_``, ``TQA_``, ``VQA_`` or ``SciVerse_``
    needs the lower-cased output equal to the answer; any other (MapQA) scores a "Which states"
    question by the share of the answer's comma-separated states found among the output's
    comma-separated pieces, and the rest by the answer occurring in the output."""
    if _UNANSWERABLE in prediction:
        return 0.0
    answer, target = prediction.lower(), source_answer(record).lower()
    if PurePath(record.image).name.split("_")[0] in _SCI_EXACT_SOURCES:
        return float(answer == target)
    if "Which states" in record.instruction:
        states = target.split(",")
        pieces = answer.split(",")
        return sum(1 for state in states if state in pieces) / len(states)
    return float(target in answer)


def mllm_cl_fin(prediction: str, record: Record) -> float:
    """``eval_finvis.py`` lines 27-33 (finance): the output lower-cased without spaces or periods equals
    the lower-cased answer."""
    if _UNANSWERABLE in prediction:
        return 0.0
    return float(prediction.lower().replace(" ", "").replace(".", "") == source_answer(record).lower())


OCRBENCH_CATEGORIES = (
    "Regular Text Recognition", "Irregular Text Recognition", "Artistic Text Recognition", "Handwriting Recognition",
    "Digit String Recognition", "Non-Semantic Text Recognition", "Scene Text-centric VQA", "Doc-oriented VQA",
    "Key Information Extraction", "Handwritten Mathematical Expression Recognition")
_HANDWRITTEN_MATH = OCRBENCH_CATEGORIES[-1]


def ocrbench_hit(prediction: str, record: Record) -> bool:
    """OCRBench's hit (``eval_ocr.py`` lines 37-52): a handwritten formula compares without spaces or
    line breaks, case kept; every other category compares lower-cased, stripped, line breaks removed;
    a hit is any answer occurring in the output."""
    for reference in record.answers:
        if record.metadata.get("answer_type") == _HANDWRITTEN_MATH:
            target = reference.strip().replace(" ", "").replace("\n", "")
            output = prediction.strip().replace(" ", "").replace("\n", "")
        else:
            target = reference.lower().strip().replace("\n", "")
            output = prediction.lower().strip().replace("\n", "")
        if target in output:
            return True
    return False


def mllm_cl_ocr(predictions: Sequence[str], records: Sequence[Record]) -> float:
    """``eval_ocr.py`` lines 19-77: OCRBench's hits summed over its ten categories, printed as "Final
    Score Norm", the hit count divided by 10 (a percentage for OCRBench's 1000 questions, not for a
    split of another size). A record whose ``answer_type`` is no OCRBench category stops the script
    (KeyError), so the cell is absent."""
    unknown = sorted({str(r.metadata.get("answer_type")) for r in records} - set(OCRBENCH_CATEGORIES))
    if unknown:
        raise Absent(f"MLLM-CL's eval_ocr.py stops on an answer_type that is no OCRBench category "
                     f"({unknown[0]!r}; it reads annotation['answer_type'] into a dict of the ten categories)")
    return sum(ocrbench_hit(p, r) for p, r in zip(predictions, records)) / 10


def mllm_cl_sat(predictions: Sequence[str], records: Sequence[Record]) -> float:
    """``eval_sat.py`` lines 19-37 (visual perception): output and answer lower-cased, stripped, without
    spaces, line breaks or periods; right when the answer occurs in the output. The script reads each
    record's ``type`` and ``task`` and stops without them, so the cell is then absent."""
    if not all("type" in r.metadata and "task" in r.metadata for r in records):
        raise Absent("MLLM-CL's eval_sat.py reads each test record's 'type' and 'task' (annotation['type'], "
                     "annotation['task']) and stops where one lacks them")

    def squeeze(text: str) -> str:
        return text.lower().strip().replace(" ", "").replace("\n", "").replace(".", "")

    return mean_percent([float(squeeze(source_answer(r)) in squeeze(p)) for p, r in zip(predictions, records)])


MLLM_CL_MATH_JUDGE = (
    "MLLM-CL scores its math task with a GPT-4 judge (ETrain/Eval/LLaVA/CoIN/eval_math.py, MathVista's answer "
    "extraction through the OpenAI API); no local rule reproduces it, so the cell is absent rather than guessed")
MLLM_CL_APP_SERVER = (
    "MLLM-CL's GUI task is scored by the MMT-Bench evaluation server (convert_result_to_submission.py writes a "
    "TSV for eval.ai, README 'Note'); no local rule reproduces it, so the cell is absent rather than guessed")


# ---------------------------------------------------------------- D-MoLE (gcd19/D-MoLE, eval/)
def dmole_vqa_score(prediction: str, record: Record) -> float:
    """``eval/vqa/evaluate_vqa.py`` lines 507-520 (``vqa_score``): m4c accuracy against the
    annotation file's answers (VizWiz)."""
    return m4c_accuracy(prediction, record.answers)


def dmole_exact(prediction: str, record: Record) -> float:
    """``eval/vqa/evaluate_vqa.py`` ``evaluate_exact_match_accuracy`` (lines 207-224): stripped,
    lower-cased exact match with any reference (OCR-VQA, KVQA)."""
    return float(any(prediction.strip().lower() == answer.strip().lower() for answer in record.answers))


DMOLE_CHOICE_BATCH = 8  # run_eval.sh: iconqa and pmcvqa evaluate in batches of 8, on one GPU


def dmole_post_process(prediction: str, options: dict[str, str]) -> str:
    """``evaluate_multi_choice.py`` ``post_process`` (lines 133-145): a one-character output is the
    letter; otherwise its first character if that is a letter of ``options``; otherwise the letter
    of the first option whose text occurs in the output; otherwise the output itself."""
    text = prediction.strip()
    if len(text) == 1:
        return text
    if not text:
        raise Absent("D-MoLE's evaluate_multi_choice.py stops on an empty output (post_process reads its first "
                     "character), so its script prints no score for this split")
    if text[0] in options:
        return text[0]
    return next((letter for letter, option in options.items() if option in text), text)


def dmole_option(predictions: Sequence[str], records: Sequence[Record]) -> float:
    """``evaluate_multi_choice.py`` lines 193-233: the outputs of each batch of 8 (in test file
    order, one process) are all parsed with the options of the batch's first question
    (``post_process(pred, options[0])``), then compared with their own answer letter."""
    correct = 0
    for start in range(0, len(records), DMOLE_CHOICE_BATCH):
        first = dict(zip("ABCDE", records[start].metadata.get("options", [])))
        for prediction, record in zip(predictions[start:start + DMOLE_CHOICE_BATCH],
                                      records[start:start + DMOLE_CHOICE_BATCH]):
            correct += dmole_post_process(prediction, first) == record.target
    return 100.0 * correct / len(records) if records else 0.0


_DMOLE_BOX = re.compile(r"\[*\[(.*?),(.*?),(.*?),(.*?)\]\]*")  # evaluate_grounding.py line 306


def dmole_grounding(prediction: str, record: Record) -> float:
    """``eval/refcoco/evaluate_grounding.py`` lines 217-241: the first ``[[x1,y1,x2,y2]]`` (an
    unparseable output becomes the box 0,0,0,0); when its coordinates sum to 4 or more they are
    divided by 1000, then scaled by the image's width and height; correct when IoU with the pixel
    box is >= 0.5. All of it in float32, as the script's torch tensors (a box at 0.5 in float32 may
    be 0.4999... in float64)."""
    found = _DMOLE_BOX.findall(prediction)
    try:
        box = np.array([float(value) for value in found[0]], dtype=np.float32)
    except (IndexError, ValueError):
        box = np.zeros(4, dtype=np.float32)
    if box.sum() >= 4:
        box = box / np.float32(1000)
    width, height = record.metadata["size"]
    box[0::2] *= np.float32(width)
    box[1::2] *= np.float32(height)
    reference = np.array(record.metadata.get("pixel_box") or record.metadata["box"], dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(float32_iou(box, reference) >= 0.5)


def float32_iou(a, b):
    """IoU of two float32 ``(x1, y1, x2, y2)`` arrays, operation for operation as torchvision's
    ``box_iou`` (D-MoLE's copy, evaluate_grounding.py lines 30-43)."""
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    width = max(np.float32(0), min(a[2], b[2]) - max(a[0], b[0]))
    height = max(np.float32(0), min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    return intersection / (area_a + area_b - intersection)


def coco_cider(predictions: Sequence[str], records: Sequence[Record]) -> float:
    """pycocoevalcap's CIDEr (CIDEr-D) x100, as D-MoLE's ``eval/caption/evaluate_caption.py``
    (lines 254-259) computes it through COCOEvalCap; the same number as the sound matrix's."""
    from mcit_bench.scoring.captions import cider_scores

    return mean_percent(cider_scores(predictions, records))


for _name, _source, _rule, _split, _captions in (
    ("coin_scienceqa", "CoIN eval_science_qa.py", coin_scienceqa, False, False),
    ("coin_textvqa", "CoIN eval_textvqa.py", coin_textvqa, False, False),
    ("coin_imagenet", "CoIN eval_ImagetNet.py", coin_imagenet, False, False),
    ("coin_gqa", "CoIN convert_gqa_for_eval.py + eval_gqa.py", coin_gqa, True, False),
    ("upper_case_exact", "CoIN eval_vizwiz.py / eval_vqav2.py; MCITlib eval_deepseek_r1.py", upper_case_exact,
     False, False),
    ("coin_grounding", "CoIN eval_grounding.py", coin_grounding, False, False),
    ("coin_ocrvqa", "CoIN eval_ocrvqa.py", coin_ocrvqa, False, False),
    ("mcitlib_caption", "MCITlib eval_caption.py", mcitlib_caption, True, True),
    ("dmole_vqa_score", "D-MoLE evaluate_vqa.py (vqa_score)", dmole_vqa_score, False, False),
    ("dmole_exact", "D-MoLE evaluate_vqa.py (accuracy)", dmole_exact, False, False),
    ("dmole_option", "D-MoLE evaluate_multi_choice.py", dmole_option, True, False),
    ("dmole_grounding", "D-MoLE evaluate_grounding.py", dmole_grounding, False, False),
    ("coco_cider", "D-MoLE evaluate_caption.py", coco_cider, True, True),
    ("prism_anls", "Prism eval_ucit.py (anls_single)", prism_anls, False, False),
    ("mllm_cl_ai2d", "MLLM-CL / MCITlib eval_ai2d.py", mllm_cl_ai2d, False, False),
    ("mllm_cl_pvqa", "MLLM-CL / MCITlib eval_pvqa.py", mllm_cl_pvqa, False, False),
    ("mllm_cl_sci", "MLLM-CL / MCITlib eval_sci.py", mllm_cl_sci, False, False),
    ("mllm_cl_fin", "MLLM-CL / MCITlib eval_finvis.py", mllm_cl_fin, False, False),
    ("mllm_cl_ocr", "MLLM-CL eval_ocr.py", mllm_cl_ocr, True, False),
    ("mllm_cl_sat", "MLLM-CL eval_sat.py", mllm_cl_sat, True, False),
):
    PUBLISHED_METRICS.add(_name, PublishedMetric(
        _name, _source, (_rule.__doc__ or "").split("\n")[0], _rule if _split else per_sample(_rule), _captions,
        MCITLIB_CAPTION_FILE_ABSENT if _rule is mcitlib_caption else None))


def _judged_elsewhere(reason: str) -> SplitRule:
    def rule(predictions: Sequence[str], records: Sequence[Record]) -> float:
        raise Absent(reason)

    return rule


for _name, _source, _reason in (
    ("mllm_cl_math", "MLLM-CL eval_math.py (GPT-4 judge)", MLLM_CL_MATH_JUDGE),
    ("mllm_cl_app", "MLLM-CL convert_result_to_submission.py (MMT-Bench server)", MLLM_CL_APP_SERVER),
):
    PUBLISHED_METRICS.add(_name, PublishedMetric(_name, _source, _reason.split(";")[0], _judged_elsewhere(_reason),
                                                 always_absent=_reason))


def score_published(metric_name: str, predictions: Sequence[str], records: Sequence[Record]) -> float:
    if len(predictions) != len(records):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} records")
    return PUBLISHED_METRICS.get(metric_name).score(predictions, records)
