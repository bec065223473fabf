"""What each ``evaluate`` module says of itself (its card: description, inputs, citation), and the
Metric classes built from the harness's own scoring functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import datasets
import evaluate
import numpy as np

from mcit_bench.scoring.continual import summarize
from mcit_bench.scoring.task_metrics import METRICS, score_references

VQA_CITATION = """@inproceedings{antol2015vqa,
  title={{VQA}: Visual Question Answering}, author={Antol, Stanislaw and Agrawal, Aishwarya and Lu, Jiasen and
  Mitchell, Margaret and Batra, Dhruv and Zitnick, C. Lawrence and Parikh, Devi}, booktitle={ICCV}, year={2015}}"""
CIDER_CITATION = """@inproceedings{vedantam2015cider,
  title={{CIDEr}: Consensus-based Image Description Evaluation}, author={Vedantam, Ramakrishna and Zitnick,
  C. Lawrence and Parikh, Devi}, booktitle={CVPR}, year={2015}}"""
ANLS_CITATION = """@inproceedings{biten2019scene,
  title={Scene Text Visual Question Answering}, author={Biten, Ali Furkan and Tito, Ruben and Mafla, Andres and
  Gomez, Lluis and Rusinol, Marcal and Valveny, Ernest and Jawahar, C. V. and Karatzas, Dimosthenis},
  booktitle={ICCV}, year={2019}}"""
CHARTQA_CITATION = """@inproceedings{masry2022chartqa,
  title={{ChartQA}: A Benchmark for Question Answering about Charts with Visual and Logical Reasoning},
  author={Masry, Ahmed and Long, Do Xuan and Tan, Jia Qing and Joty, Shafiq and Hoque, Enamul},
  booktitle={Findings of ACL}, year={2022}}"""
CONTINUAL_CITATION = """@inproceedings{lopezpaz2017gem,
  title={Gradient Episodic Memory for Continual Learning}, author={Lopez-Paz, David and Ranzato, Marc'Aurelio},
  booktitle={NeurIPS}, year={2017}}"""

ANSWERS = datasets.Sequence(datasets.Value("string"))
ONE_ANSWER = datasets.Value("string")


@dataclass(frozen=True)
class Card:
    references: Any  # the feature of one sample's references
    inputs: str
    citation: str
    metadata: tuple[str, ...] = ()  # compute() keyword lists that become each sample's metadata


CARDS = {
    "vqa_accuracy": Card(ANSWERS, "predictions: the model's answers; references: each sample's annotator answers "
                         "(ten for VQAv2, TextVQA, VizWiz; one gives normalised exact match)", VQA_CITATION),
    "exact_match": Card(ANSWERS, "predictions: the model's answers; references: each sample's accepted answers",
                        VQA_CITATION),
    "anls": Card(ANSWERS, "predictions: the model's answers; references: each sample's accepted answers",
                 ANLS_CITATION),
    "relaxed_accuracy": Card(ANSWERS, "predictions: the model's answers; references: each sample's accepted "
                             "answers (numbers within 5% count)", CHARTQA_CITATION),
    "option_accuracy": Card(ONE_ANSWER, "predictions: the model's outputs; references: each sample's correct "
                            "option letter; options (optional): each sample's option texts, so an answer given "
                            "as the option's text counts", "", ("options",)),
    "grounding_iou50": Card(ONE_ANSWER, "predictions: the model's boxes as text; references: each sample's box "
                            "as text, in the frame named by boxes (padded_square, pixel or thousand); size "
                            "(optional): each image's [width, height]", "", ("size", "boxes")),
    "cider": Card(ANSWERS, "predictions: the model's captions; references: each image's reference captions "
                  "(needs Java, for the PTB tokenizer of pycocoevalcap)", CIDER_CITATION),
}


def task_metric(name: str) -> type[evaluate.Metric]:
    """The ``evaluate`` Metric of the harness's per-task metric ``name``: a task's score, 0-100."""
    card = CARDS[name]

    class TaskMetric(evaluate.Metric):
        def _info(self) -> evaluate.MetricInfo:
            return evaluate.MetricInfo(
                description=f"mcit-bench's {name}: {METRICS.get(name).description}; a task's score, 0-100, "
                            f"exactly the harness's accuracy-matrix cell", citation=card.citation,
                inputs_description=card.inputs,
                features=datasets.Features({"predictions": datasets.Value("string"), "references": card.references}))

        def _compute(self, predictions, references, **metadata):
            unknown = sorted(set(metadata) - set(card.metadata))
            if unknown:
                raise ValueError(f"{name} takes no {', '.join(unknown)}; it reads {list(card.metadata) or 'nothing'}")
            answers = [reference if isinstance(reference, list) else [reference] for reference in references]
            return {name: score_references(name, predictions, answers, sample_metadata(metadata, len(predictions)))}

    TaskMetric.__name__ = "".join(part.title() for part in name.split("_"))
    return TaskMetric


def sample_metadata(metadata: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Each sample's metadata from compute()'s keyword lists (one entry a sample, None for none); a
    string applies to every sample (``boxes="pixel"``)."""
    samples: list[dict[str, Any]] = [{} for _ in range(count)]
    for key, values in metadata.items():
        if values is None:
            continue
        values = [values] * count if isinstance(values, str) else list(values)
        if len(values) != count:
            raise ValueError(f"{key} has {len(values)} entries for {count} predictions: give one a sample")
        for sample, value in zip(samples, values):
            if value is not None:
                sample[key] = list(value) if isinstance(value, tuple) else value
    return samples


class ContinualMetrics(evaluate.Metric):
    """Final accuracy, MAA, BWT, forgetting, FWT and MFT of an accuracy matrix R ((T + 1) x T, 0-100: row 0 the
    base model, row i after training task i), as the harness's summary computes them."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="mcit-bench's continual metrics of an accuracy matrix: final_acc, avg_incremental_acc "
                        "(MAA), bwt, forgetting, fwt, mean_finetune_acc (docs/METHODS.md gives each formula)",
            citation=CONTINUAL_CITATION,
            inputs_description="matrix_rows: the rows of R, base model first, each the T task scores (0-100)",
            features=datasets.Features({"matrix_rows": datasets.Sequence(datasets.Value("float64"))}))

    def _compute(self, matrix_rows):
        return summarize(np.array(matrix_rows, dtype=float))
