"""BranchLoRA and MoELoRA at their defaults hold the same up-projection rank, counted by hand on mcit-tiny."""

from __future__ import annotations

import pytest
import torch

from mcit_bench.adapters.experts import BranchLoRA, MoELoRA
from mcit_bench.config import RunConfig
from mcit_bench.data.stream import load_stream
from mcit_bench.methods.base import RunContext
from mcit_bench.methods.registry import build_method
from mcit_bench.models.loading import load_model
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
def test_branchlora_and_moelora_share_total_rank_and_branchlora_trains_fewer_parameters():
    _, moelora, _, _ = adapters("moelora")
    # 8 experts x rank 2: A (16 x in), B (out x 16), router (8 x in) per linear
    assert count(moelora, MoELoRA) == LAYERS * (16 * SUM_IN + 16 * SUM_OUT + 8 * SUM_IN) == 200_704
    method, branchlora, stream, run = adapters("branchlora")
    layers = [m for m in branchlora.modules() if isinstance(m, BranchLoRA)]
    first, second = method.stages(stream)
    method.before_task(first, run)
    # trunk A (2 x in), 8 branches of rank 2 (out x 2 each: total rank 16, as MoELoRA), router 0 (8 x in)
    assert count(branchlora, BranchLoRA) == LAYERS * (2 * SUM_IN + 16 * SUM_OUT + 8 * SUM_IN) == 136_192
    assert count(branchlora, BranchLoRA, trainable=True) == 136_192
    for layer in layers:
        layer.usage.copy_(torch.tensor([1.0, 4.0, 3.0, 2.0, 0.0, 0.5, 0.0, 0.0]))
    method.after_task(first, run)
    method.before_task(second, run)
    # share (the default): no branch is added; the most used (1) freezes; a second router joins
    assert all(layer.n_branches == 8 for layer in layers)
    assert all(method.frozen[name] == [1] for name in method.layers)
    assert count(branchlora, BranchLoRA) == LAYERS * (2 * SUM_IN + 16 * SUM_OUT + 16 * SUM_IN) == 173_056
    # in training now: the trunk, the seven other branches, router 1
    assert count(branchlora, BranchLoRA, trainable=True) == LAYERS * (2 * SUM_IN + 14 * SUM_OUT + 8 * SUM_IN) \
        == 124_928
