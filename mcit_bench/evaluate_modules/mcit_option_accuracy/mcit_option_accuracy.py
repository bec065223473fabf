"""mcit-bench's option_accuracy as an evaluate module (card: README.md beside this file)."""

from mcit_bench.evaluate_modules.cards import task_metric

OptionAccuracy = task_metric("option_accuracy")
