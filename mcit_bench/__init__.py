"""mcit-bench: benchmark suite and evaluation harness for multimodal continual instruction tuning."""

__version__ = "0.1.0"
