"""mcit-bench's cider as an evaluate module (card: README.md beside this file)."""

from mcit_bench.evaluate_modules.cards import task_metric

Cider = task_metric("cider")
