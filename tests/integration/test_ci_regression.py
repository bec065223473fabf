"""CI's regression run of a mixture-of-experts method: MoELoRA's `--subset ci` run against its committed
golden results (tests/golden/ci-moelora.json), as `mcit-bench check --tolerance 5` compares them.

With MCIT_BENCH_CI_RUNS set, the run is left there for `.ci/run` to show beside seqft's (the wheel
test's): made inside the suite, it trains while the other worker tests, instead of after the suite."""

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mcit_bench.board.check import compare
from mcit_bench.cli import app
from mcit_bench.results.document import load_results
from tests.conftest import GOLDEN

pytestmark = pytest.mark.slow

TOLERANCE = 5.0  # points a value may drop: .ci/run's `check --tolerance 5`


def test_moelora_ci_run_stays_within_its_golden_results(tmp_path, cache_root):
    runs = Path(os.environ.get("MCIT_BENCH_CI_RUNS") or tmp_path / "runs").resolve()
    result = CliRunner().invoke(app, ["run", "--subset", "ci", "--method", "moelora", "--output", str(runs),
                                      "--overwrite", "--cache-dir", str(cache_root)])
    assert result.exit_code == 0, result.output
    current = load_results(runs / "synth-coin" / "moelora" / "seed0-ci" / "results.json")
    golden = load_results(GOLDEN / "ci-moelora.json")
    assert current.tasks == golden.tasks and len(current.matrix) == len(golden.matrix) == 9
    regressions, _ = compare(current, golden, TOLERANCE)
    assert regressions == []
