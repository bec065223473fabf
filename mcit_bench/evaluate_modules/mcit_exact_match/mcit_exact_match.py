"""mcit-bench's exact_match as an evaluate module (card: README.md beside this file)."""

from mcit_bench.evaluate_modules.cards import task_metric

ExactMatch = task_metric("exact_match")
