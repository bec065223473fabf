"""mcit-bench's vqa_accuracy as an evaluate module (card: README.md beside this file)."""

from mcit_bench.evaluate_modules.cards import task_metric

VqaAccuracy = task_metric("vqa_accuracy")
