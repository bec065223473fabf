"""mcit-bench's grounding_iou50 as an evaluate module (card: README.md beside this file)."""

from mcit_bench.evaluate_modules.cards import task_metric

GroundingIou50 = task_metric("grounding_iou50")
