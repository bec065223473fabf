"""The unified instruction record: one shape for every task of every stream."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

TASK_TYPES: tuple[str, ...] = (
    "multiple_choice",  # ScienceQA, IconQA: answer is an option letter
    "vqa",  # VQAv2, TextVQA, VizWiz: soft accuracy over (up to) ten annotator answers
    "classification",  # ImageNet, ImageNet-R: normalised exact match with the label
    "short_answer",  # GQA, OCR-VQA: normalised exact match
    "grounding",  # RefCOCO family: a box [x1, y1, x2, y2] normalised to 0-1
    "caption",  # Flickr30k, TextCaps: CIDEr against several references
)
IMAGE_TAG = "<image>"
# the label of a token the loss ignores (prompt, padding): PyTorch's cross-entropy default
IGNORE_INDEX = -100
# the metric each task type is scored with unless its task names another (mcit_bench.scoring.task_metrics)
DEFAULT_METRIC: dict[str, str] = {
    "multiple_choice": "option_accuracy",
    "vqa": "vqa_accuracy",
    "classification": "exact_match",
    "short_answer": "exact_match",
    "grounding": "grounding_iou50",
    "caption": "cider",
}


@dataclass(frozen=True)
class Record:
    """One instruction-following sample.

    ``instruction`` is the human turn without the image tag; ``answers`` holds every reference
    (ten annotators for VQA, several captions, or one); ``metadata`` carries what a metric needs
    beyond text: ``bbox`` and ``size`` for grounding, ``options`` for multiple choice.
    """

    id: str
    image: str
    instruction: str
    answers: tuple[str, ...]
    task_type: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """The answer a model is trained on: the most frequent reference, earliest on a tie."""
        counts = Counter(self.answers)
        return max(self.answers, key=lambda answer: (counts[answer], -self.answers.index(answer)))

    def to_row(self) -> dict[str, Any]:
        """A flat row for ``datasets`` (metadata kept as JSON text so every task shares a schema)."""
        import json

        return {
            "id": self.id,
            "image": self.image,
            "instruction": self.instruction,
            "answers": list(self.answers),
            "target": self.target,
            "task_type": self.task_type,
            "metadata": json.dumps(self.metadata, sort_keys=True),
        }
