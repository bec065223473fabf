"""Gradient accumulation: a global batch split into micro-batches trains as the whole batch does,
because the NLL is the mean over the global batch's answer tokens and method losses count once a step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcit_bench.config import RunConfig
from mcit_bench.engine.run import run_stream
from mcit_bench.engine.train import answer_token_weights
from tests.conftest import FIXTURES

pytestmark = pytest.mark.slow
SEQUENCE = str(FIXTURES / "two_task.yaml")
TEST_SAMPLES = 16


@pytest.mark.parametrize("method", ["seqft", "ewc"])
def test_eight_times_four_trains_as_thirty_two(method, tmp_path, cache_root):
    def run(training: dict, folder: str) -> dict:  # 10 steps a task: enough for the sums to drift if they could
        config = RunConfig(method=method, sequence=SEQUENCE, seed=0, training={**training, "steps_per_task": 10})
        return run_stream(config, tmp_path / folder, cache_root=cache_root)

    whole = run({"batch_size": 32}, "whole")
    split = run({"batch_size": 8, "grad_accum": 4}, "split")
    # the same samples and the same gradient up to the order of float sums: the losses agree closely
    # and no answer moves by more than one test sample
    whole_losses = [stage["final_loss"] for stage in whole["stages"]]
    split_losses = [stage["final_loss"] for stage in split["stages"]]
    np.testing.assert_allclose(split_losses, whole_losses, rtol=1e-3)
    np.testing.assert_allclose(split["matrix"], whole["matrix"], atol=100 / TEST_SAMPLES + 1e-9)
    assert [stage["steps"] for stage in split["stages"]] == [stage["steps"] for stage in whole["stages"]]


def labelled(tokens: int, width: int = 6) -> dict[str, torch.Tensor]:
    labels = torch.full((1, width), -100)
    labels[0, width - tokens:] = 7  # the last ``tokens`` positions are answer tokens
    return {"labels": labels}


class OneProcess:
    num_processes = 1


def test_micro_batches_are_weighted_by_their_share_of_answer_tokens():
    # means over 3 and 1 answer tokens: 3/4 and 1/4 of the global mean
    assert answer_token_weights([labelled(3), labelled(1)], OneProcess()) == [0.75, 0.25]
    assert answer_token_weights([labelled(2)], OneProcess()) == [1.0]  # no accumulation: untouched


def test_the_projector_rate_is_for_the_projectors_own_weights_not_for_adapters_on_it():
    """D-MoLE attaches experts to projector layers; they train at the method's rate, as every expert
    does in its code, while the projector's own weights keep theirs."""
    from mcit_bench.adapters.experts import Routing, TaskExperts, attach_adapters
    from mcit_bench.adapters.lora import freeze_all, unfreeze_projector
    from mcit_bench.config import TrainingConfig
    from mcit_bench.engine.train import optimizer_groups
    from mcit_bench.methods.base import Method
    from mcit_bench.models.anatomy import projector
    from mcit_bench.models.loading import load_model

    model, _ = load_model("mcit-tiny")
    freeze_all(model)
    unfreeze_projector(model)
    target = next(name for name, module in model.named_modules()
                  if isinstance(module, torch.nn.Linear) and module in set(projector(model).modules()))
    experts = attach_adapters(model, [target], lambda name, linear: TaskExperts(linear.in_features,
                                                                               linear.out_features, 2, 4.0, Routing()))
    experts[target].add_expert(0, torch.Generator().manual_seed(0), torch.device("cpu"))
    for parameter in experts[target].parameters():
        parameter.requires_grad_(True)
    groups = optimizer_groups(Method(Method.Options()), model, TrainingConfig(lr=1e-3, projector_lr=1e-4))
    expert_ids = {id(p) for p in experts[target].parameters()}
    own = {id(p) for name, p in projector(model).named_parameters() if ".adapter." not in f".{name}"}
    by_rate = {group.get("lr"): {id(p) for p in group["params"]} for group in groups}
    assert by_rate[1e-4] == own and expert_ids <= by_rate[None]


def test_a_finished_stage_leaves_no_optimizer_state_behind():
    """The accelerator holds what it prepared; after a stage it lets go, or every stage's optimizer
    state would stay in memory to the end of the run (on CPU without the full garbage collection)."""
    import gc
    import weakref

    from accelerate import Accelerator

    from mcit_bench.engine.train import release_stage

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(64, 64)
    model, optimizer = accelerator.prepare(model, torch.optim.AdamW(model.parameters()))
    model(torch.ones(2, 64)).sum().backward()
    optimizer.step()
    state = weakref.ref(optimizer.optimizer.state[model.weight]["exp_avg"])
    del optimizer
    gc.disable()  # refcounting alone must free it
    try:
        assert state() is not None  # the accelerator still holds the optimizer
        release_stage(accelerator)
        assert state() is None
    finally:
        gc.enable()
