"""mcit-bench's relaxed_accuracy as an evaluate module (card: README.md beside this file)."""

from mcit_bench.evaluate_modules.cards import task_metric

RelaxedAccuracy = task_metric("relaxed_accuracy")
