"""CL-MoE (clmoe; Huai et al., CVPR 2025, "CL-MoE: Enhancing Multimodal Large Language Model with Dual
Momentum Mixture-of-Experts for Continual Visual Question Answering"; official code ECNU-ICALK/CL-MoE).

The layer is CoIN's MoELoRA (the code's ``CLMoE/peft/tuners/clitmoelora.py`` is that module): E experts
splitting rank r, a dense token-level softmax router, everything trained on every task. What CL-MoE adds
is the post-task momentum merge (``Train_MOE/Train.sh``: after each task from the second, ``statistic.py``
then ``params.py``):

- While a task trains, every layer's router picks each token's top-2 experts, and a global count
  (all layers together) is kept of how often each expert is picked; a token whose two best gates tie
  counts for neither (``clitmoelora.py``, lines 405-417). The task's expert set is the ``index_size``
  most picked experts (``statistic.py``: the top 8).
- After task t the experts are merged with their state after task t-1: an expert in task t-1's set
  but not in task t's keeps (1 - momentum) of its old weights, every other expert keeps momentum of
  them (``params.py``, lines 21-47, momentum 0.7). The routers and the projector keep the new weights.

docs/METHODS.md says what the released scripts do literally, and which of the paper's two routers is
active in them.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn

from mcit_bench.adapters.experts import MoELoRA, attach_adapters
from mcit_bench.adapters.lora import freeze_all, language_linear_names, unfreeze_projector
from mcit_bench.methods.base import Method, MethodOptions, RunContext, Stage, register_method
from mcit_bench.methods.distributed import summed_over_processes
from mcit_bench.methods.search import LR, Choice, Uniform


class CLMoEOptions(MethodOptions):
    experts: int = Field(default=4, gt=0)  # Train_MOE/*.sh: --expert_num 4
    rank: int = Field(default=16, gt=0)  # total over the experts (the scripts: 32 on 7B)
    alpha: float = Field(default=32.0, gt=0)  # alpha / rank = 2, the scripts' 64 / 32
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)  # LLaVA's default: the scripts pass none
    momentum: float = Field(default=0.7, ge=0.0, le=1.0)  # params.py's alpha
    index_size: int = Field(default=8, gt=0)  # statistic.py keeps the top 8
    train_projector: bool = True  # --mm_projector_lr 2e-5

    @model_validator(mode="after")
    def _rank_splits(self) -> "CLMoEOptions":
        if self.rank % self.experts:
            raise ValueError(f"rank {self.rank} must be a multiple of experts {self.experts}")
        return self


def top2_counts(gates: torch.Tensor, experts: int) -> torch.Tensor:
    """How often each expert is among a token's two largest gates; a token whose two largest gates are
    equal counts for neither (the code marks both -1)."""
    values, indices = gates.reshape(-1, experts).topk(2, dim=-1)
    valid = (values[:, 0] != values[:, 1]).unsqueeze(-1).expand_as(indices)
    return torch.bincount(indices[valid], minlength=experts)


def expert_set(counts: torch.Tensor, size: int) -> list[int]:
    """statistic.py: the ``size`` most picked experts (picked at least once), most picked first."""
    order = torch.argsort(counts, descending=True, stable=True).tolist()
    return [expert for expert in order if counts[expert] > 0][:size]


def merged(old: torch.Tensor, new: torch.Tensor, old_weight: torch.Tensor) -> torch.Tensor:
    """Per expert e (a block of rows of A, of columns of B.T), old_weight[e] * old + (1 - old_weight[e]) * new."""
    return old_weight * old + (1 - old_weight) * new


@register_method("clmoe")
class CLMoE(Method):
    Options = CLMoEOptions
    search_space = {**LR, "rank": Choice((8, 16, 32)), "momentum": Uniform(0.5, 0.9)}

    def __init__(self, options: CLMoEOptions) -> None:
        super().__init__(options)
        self.layers: dict[str, MoELoRA] = {}
        self.model: nn.Module | None = None
        self.counts = torch.zeros(options.experts, dtype=torch.long)
        self.previous_set: list[int] | None = None
        self.before: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.micro_batch = 0
        self.counted: dict[str, int] = {}

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        freeze_all(model)
        o = self.options
        self.layers = attach_adapters(model, language_linear_names(model),
                                      lambda name, linear: MoELoRA(linear.in_features, linear.out_features, o.experts,
                                                                   o.rank, o.alpha, o.dropout))
        for name, layer in self.layers.items():
            layer.register_forward_hook(self.counter(name))
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(".adapter." in name)
        if o.train_projector:
            unfreeze_projector(model)
        self.model = model
        return model

    def counter(self, name: str):
        def count(layer: MoELoRA, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            # in training, once per micro-batch: activation recomputation runs the forward again
            if layer.training and self.counted.get(name) != self.micro_batch:
                self.counted[name] = self.micro_batch
                with torch.no_grad():
                    self.counts += top2_counts(layer.gates(inputs[0]), layer.experts).cpu()
        return count

    def before_task(self, stage: Stage, run: RunContext) -> None:
        self.counts.zero_()
        # the experts as the last task left them (merged): the old side of this task's merge
        self.before = {name: (layer.lora_A.detach().clone(), layer.lora_B.detach().clone())
                       for name, layer in self.layers.items()}

    def before_step(self, batch: dict[str, torch.Tensor], run: RunContext,
                    samples: list[dict[str, Any]] | None = None) -> None:
        self.micro_batch += 1

    def after_task(self, stage: Stage, run: RunContext) -> None:
        current = expert_set(summed_over_processes(self.counts), self.options.index_size)
        if self.previous_set is not None:
            self.merge(self.previous_set, current)
        self.previous_set = current

    def old_weights(self, previous: list[int], current: list[int]) -> torch.Tensor:
        """Per expert, the share of its old weights the merge keeps (params.py, lines 31-47)."""
        m = self.options.momentum
        return torch.tensor([1 - m if e in previous and e not in current else m for e in range(self.options.experts)])

    @torch.no_grad()
    def merge(self, previous: list[int], current: list[int]) -> None:
        weights = self.old_weights(previous, current)
        for name, layer in self.layers.items():
            old_a, old_b = self.before[name]
            per_row = weights.repeat_interleave(layer.expert_rank).to(layer.lora_A.device, layer.lora_A.dtype)
            layer.lora_A.copy_(merged(old_a, layer.lora_A, per_row.unsqueeze(1)))
            layer.lora_B.copy_(merged(old_b, layer.lora_B, per_row.unsqueeze(0)))

    def state_dict(self) -> dict[str, Any]:
        return {"previous_set": self.previous_set}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        self.previous_set = state["previous_set"]
