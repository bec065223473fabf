"""mcit-bench: benchmark suite and evaluation harness for multimodal continual instruction tuning."""

__version__ = "0.1.0"

# The Python API (mcit_bench/api.py), loaded on first use: `import mcit_bench` stays light, and the
# command line's refusals are the same classes.
API = ("ConfigError", "DataError", "Leaderboard", "Results", "Runs", "UserError", "leaderboard", "load_results",
       "metric_module", "run")


def __getattr__(name: str):
    if name in API:
        import importlib

        # by name, not an import statement: every module reads __version__ from this package, and the API
        # sits on the top floor, which no floor below may import (docs/ARCHITECTURE.md)
        return getattr(importlib.import_module("mcit_bench.api"), name)
    raise AttributeError(f"module 'mcit_bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
