"""mcit-bench's anls as an evaluate module (card: README.md beside this file)."""

from mcit_bench.evaluate_modules.cards import task_metric

Anls = task_metric("anls")
