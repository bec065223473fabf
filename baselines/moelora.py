"""MoELoRA (moelora; Chen et al. 2024, CoIN): a mixture of LoRA experts in every adapted layer.

Each linear layer of the language model gets E experts that split the rank r between them and a
dense token-level softmax router (no top-k, no task identity). Everything (experts, routers, the
projector) trains on every task, so it forgets like seqft unless the routing happens to separate
tasks. The layer is CoIN's module (``CoIN/peft/tuners/coinmoelora.py``): experts' A from N(0, 0.01^2),
B = 0, dropout on the experts' input (LLaVA's default 0.05, ``ETrain/Train/LLaVA/train.py`` line 96).
CoIN uses E = 8, r = 128, alpha 256 on 7B models (``scripts/LLaVA/Train_MOE/1_Science.sh``, lines
14-15); on mcit-tiny the default keeps CoIN's 8 experts and alpha / r = 2 at seqft's total rank 16
(rank 2 each).
"""

from __future__ import annotations

from pydantic import Field, model_validator
from torch import nn

from mcit_bench.adapters.experts import MoELoRA, attach_adapters
from mcit_bench.adapters.lora import freeze_all, language_linear_names, unfreeze_projector
from mcit_bench.methods.base import Method, MethodOptions, RunContext, register_method
from mcit_bench.methods.search import LR, Choice


class MoELoRAOptions(MethodOptions):
    experts: int = Field(default=8, gt=0)  # CoIN's
    rank: int = Field(default=16, gt=0)  # total over the experts
    alpha: float = Field(default=32.0, gt=0)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)  # LLaVA's default: CoIN's scripts pass none
    train_projector: bool = True

    @model_validator(mode="after")
    def _rank_splits(self) -> "MoELoRAOptions":
        if self.rank % self.experts:
            raise ValueError(f"rank {self.rank} must be a multiple of experts {self.experts}")
        return self


@register_method("moelora")
class MoELoRAMethod(Method):
    Options = MoELoRAOptions
    # total rank over the experts, each a multiple of the default 8 experts
    search_space = {**LR, "rank": Choice((8, 16, 32))}

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        freeze_all(model)
        options = self.options
        attach_adapters(model, language_linear_names(model),
                        lambda name, linear: MoELoRA(linear.in_features, linear.out_features, options.experts,
                                                     options.rank, options.alpha, options.dropout))
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(".adapter." in name)
        if options.train_projector:
            unfreeze_projector(model)
        return model
