"""EWC's lambda is at the scale of its Fisher: on synth-coin's ci subset, the penalty's gradient and
the NLL's are of one order through the second task, at the default lambda and at the full stream's
tuned settings (issue 15: faithful EWC)."""

from __future__ import annotations

import statistics

import pytest
from mcit_bench.baselines.ewc import EWCOptions

from mcit_bench.config import load_config_file, parse_run_config
from tests.conftest import BENCHMARKS, benchmark_script

pytestmark = pytest.mark.slow


def probe_module():
    return benchmark_script("ewc_penalty_scale")


# EWC's default, and the choice of the full stream's 8-trial study on its validation split
# (benchmarks/tuned-synth-coin/ewc.yaml): lambda, LoRA rank, learning rate. Its gamma first acts on
# stage 3's importance, after the stage this probe measures.
TUNED = parse_run_config(load_config_file(BENCHMARKS / "tuned-synth-coin" / "ewc.yaml"), "ewc.yaml")
SETTINGS = {"default": (EWCOptions().ewc_lambda, None, None),
            "tuned": (TUNED.method_options["ewc_lambda"], TUNED.method_options["lora_rank"], TUNED.training.lr)}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_penalty_and_nll_gradients_are_of_one_order(name, tmp_path, cache_root):
    ewc_lambda, lora_rank, lr = SETTINGS[name]
    ratios = probe_module().ratios_for(ewc_lambda, every=4, subset="ci", output=tmp_path, cache_root=cache_root,
                                       lora_rank=lora_rank, lr=lr)
    median = statistics.median(ratios)
    print(f"{name} ewc_lambda {ewc_lambda:g}: penalty / NLL gradient norm, median {median:.3g} over "
          f"{len(ratios)} batches, last {ratios[-1]:.3g}")
    assert len(ratios) == 10  # every 4th of stage 2's 40 steps, from its first
    assert 0.1 <= median <= 10  # neither seqft (far below) nor the penalty owning every step (far above)
