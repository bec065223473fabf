"""mcit-bench's continual metrics of an accuracy matrix as an evaluate module (card: README.md beside this file)."""

from mcit_bench.evaluate_modules.cards import ContinualMetrics

__all__ = ["ContinualMetrics"]
