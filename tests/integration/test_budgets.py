"""BranchLoRA and MoELoRA at their defaults hold the same up-projection rank, counted by hand on mcit-tiny."""

from __future__ import annotations

import pytest
import torch

from mcit_bench.adapters.experts import BranchLoRA, MoELoRA
from mcit_bench.config import RunConfig
from mcit_bench.data.stream import load_stream
from mcit_bench.methods.base import RunContext
from mcit_bench.models.loading import load_model
from mcit_bench.runner import build_method
from tests.conftest import FIXTURES

SEQUENCE = str(FIXTURES / "two_task_quick.yaml")

# mcit-tiny's language model: 4 layers of q, k, v, o (128 -> 128), gate and up (128 -> 384), down (384 -> 128)
LAYERS = 4
SUM_IN = 4 * 128 + 2 * 128 + 384  # 1152: the inputs summed over one layer's seven linears
SUM_OUT = 4 * 128 + 2 * 384 + 128  # 1408


def adapters(name: str):
    torch.manual_seed(0)
    model, _ = load_model("mcit-tiny")
    stream = load_stream(SEQUENCE)
    run = RunContext(stream=stream, seed=0)
    method = build_method(RunConfig(method=name, sequence=SEQUENCE))
    model = method.setup(model, run)
    return method, model, stream, run


def count(model: torch.nn.Module, kind: type, trainable: bool = False) -> int:
    return sum(p.numel() for m in model.modules() if isinstance(m, kind) for p in m.parameters()
               if p.requires_grad or not trainable)


@pytest.mark.slow
def test_branchlora_and_moelora_share_total_rank_and_branchlora_holds_fewer_parameters():
    _, moelora, _, _ = adapters("moelora")
    # 4 experts x rank 4: A (16 x in), B (out x 16), router (4 x in) per linear
    assert count(moelora, MoELoRA) == LAYERS * (16 * SUM_IN + 16 * SUM_OUT + 4 * SUM_IN) == 182_272
    method, branchlora, stream, run = adapters("branchlora")
    layers = [m for m in branchlora.modules() if isinstance(m, BranchLoRA)]
    first, second = method.stages(stream)
    method.before_task(first, run)
    # trunk A (4 x in), 4 branches of rank 4 (out x 4 each: total rank 16, as MoELoRA), router 0 (4 x in)
    assert count(branchlora, BranchLoRA) == LAYERS * (4 * SUM_IN + 16 * SUM_OUT + 4 * SUM_IN) == 126_976
    assert count(branchlora, BranchLoRA, trainable=True) == 126_976
    for layer in layers:
        layer.usage.copy_(torch.tensor([1.0, 4.0, 3.0, 2.0]))
    method.after_task(first, run)
    method.before_task(second, run)
    # share (the default): no branch is added; the two most used (1, 2) freeze; a second router joins
    assert all(layer.n_branches == 4 for layer in layers)
    assert all(method.frozen[name] == [1, 2] for name in method.layers)
    assert count(branchlora, BranchLoRA) == LAYERS * (4 * SUM_IN + 16 * SUM_OUT + 8 * SUM_IN) == 145_408
    # in training now: the trunk, branches 0 and 3, router 1
    assert count(branchlora, BranchLoRA, trainable=True) == LAYERS * (4 * SUM_IN + 8 * SUM_OUT + 4 * SUM_IN) == 81_920
