"""Versioned task sequences (YAML), shipped with the package as ``mcit_bench.task_sequences``."""
