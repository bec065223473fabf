"""The harness's metrics as Hugging Face ``evaluate`` modules, loadable offline from this folder:
``evaluate.load(mcit_bench.metric_module("vqa_accuracy"))``. Each module calls the harness's own
scoring functions, so it computes exactly the matrix's cells and summary (tests/unit/test_evaluate_modules.py)."""

from pathlib import Path

MODULES = ("vqa_accuracy", "exact_match", "anls", "relaxed_accuracy", "option_accuracy", "grounding_iou50", "cider",
           "continual")


def metric_module(name: str) -> str:
    """The folder to give ``evaluate.load`` for one of ``MODULES``."""
    if name not in MODULES:
        from mcit_bench.core.errors import ConfigError

        raise ConfigError(f"unknown metric module {name!r}: the modules are {', '.join(MODULES)}")
    return str(Path(__file__).resolve().parent / f"mcit_{name}")
