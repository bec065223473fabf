"""Shared fixtures: one cache of generated data per test session, kept out of the user's home."""

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

# `pytest` runs two xdist workers (pyproject.toml) on this project's two-core machines: one torch
# thread each, or the two slow each other down, and the processes the tests launch (torchrun, the
# CLI) inherit the setting
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
# the CLI tests give each call its terminal width (CliRunner's env); a COLUMNS set when the console was
# created (xdist sets one) would fix it for every call instead
os.environ.pop("COLUMNS", None)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GOLDEN = Path(__file__).resolve().parent / "golden"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# options that shrink a method's own loops (not its mechanism) on the quick test slices: MR-LoRA's router
# trains 40 epochs over its stored samples after every task, longer than the slice's whole training
QUICK_OPTIONS: dict[str, dict] = {"mrlora": {"router_epochs": 4}}


# The fuzz suites' budget: fixed examples drawn from a fixed seed in CI (bounded time, the same cases on
# every run); MCIT_BENCH_FUZZ_SCALE=N runs N times the examples, freshly drawn, to search longer on demand.
FUZZ_SCALE = max(1, int(os.environ.get("MCIT_BENCH_FUZZ_SCALE", "1")))


def fuzz_settings(examples: int, *health_checks):
    """Hypothesis settings of a fuzz test: ``examples`` (times the scale), no deadline, derandomized in CI."""
    from hypothesis import HealthCheck, settings

    return settings(max_examples=examples * FUZZ_SCALE, deadline=None, derandomize=FUZZ_SCALE == 1,
                    suppress_health_check=[HealthCheck.too_slow, *health_checks])


def quick_option_args(method: str) -> list[str]:
    """QUICK_OPTIONS as the command line takes them."""
    return [arg for key, value in QUICK_OPTIONS.get(method, {}).items() for arg in ("--option", f"{key}={value}")]


def benchmark_script(name: str) -> ModuleType:
    """A script of benchmarks/ (not a package) imported as a module, to test its functions."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mcit-cache")


@pytest.fixture
def three_task_cut(monkeypatch, request):
    """The leaderboard tests' documents are a three-task cut of synth-coin (hand-computed 4 x 3 matrices,
    tests/unit/test_leaderboard.py); the leaderboard is told that cut is the sequence's task list, except
    in tests whose name says the sequence's own task list is their subject ("own_tasks")."""
    if "own_tasks" in request.node.name:
        return
    import mcit_bench.board.submit as board
    from mcit_bench.data.stream import load_stream

    monkeypatch.setattr(board, "shipped_tasks",
                        lambda name, subset, variant=None: load_stream(name, subset, variant).task_names[:3])
