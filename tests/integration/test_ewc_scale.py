"""EWC's lambda is at the scale of its Fisher: on synth-coin's ci subset, the penalty's gradient and
the NLL's are of one order through the second task at the default lambda (issue: faithful EWC)."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import pytest
from mcit_bench.baselines.ewc import EWCOptions

pytestmark = pytest.mark.slow
PROBE = Path(__file__).resolve().parents[2] / "benchmarks" / "ewc_penalty_scale.py"


def probe_module():
    spec = importlib.util.spec_from_file_location("ewc_penalty_scale", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_penalty_and_nll_gradients_are_of_one_order_at_the_default_lambda(tmp_path, cache_root):
    default = EWCOptions().ewc_lambda
    ratios = probe_module().ratios_for(default, every=4, subset="ci", output=tmp_path, cache_root=cache_root)
    median = statistics.median(ratios)
    print(f"ewc_lambda {default:g}: penalty / NLL gradient norm, median {median:.3g} over {len(ratios)} batches, "
          f"last {ratios[-1]:.3g}")
    assert len(ratios) == 10  # every 4th of stage 2's 40 steps, from its first
    assert 0.1 <= median <= 10  # neither seqft (far below) nor the penalty owning every step (far above)
