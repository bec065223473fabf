"""SMoLoRA (smolora; Wang et al., ICCV 2025, "SMoLoRA: Exploring and Defying Dual Catastrophic Forgetting
in Continual Visual Instruction Tuning"; official code Minato-Zackie/SMoLoRA, which Prism ports as
PEFT/tuners/custom/smolora.py and method/custom/smolora/).

One separable mixture of LoRA experts on every linear layer of the language model
(``mcit_bench.adapters.separable``): half of the experts answer to a visual-understanding router reading
the mean of the layer's input over the sample's tokens, half to an instruction-following router reading an
embedding of the sample's instruction; a learned per-token softmax weighs the two chosen experts. One set
of adapters trains through every task, as in the official scripts (each task starts from the previous
one's checkpoint, ``scripts/SMoLoRA/Train_Eval/*.sh``). The official scripts use 8 experts, rank 128 and
alpha 256 (scale 2) on 7B models, learning rate 1e-4; on mcit-tiny the default keeps the 8 experts and
scale 2 at seqft's total rank 16 (2 each), as MoELoRA's does.

The instruction embedding: the official code embeds one instruction template per task offline with
Sentence-BERT (``scripts/SMoLoRA/ins_gen.py``) and picks the row of the task given on the command line
(``--ins_type``), in training and in evaluation alike: the task label at test time, which no method here
is given. Prism's port offers, besides, the frozen CLIP text tower's feature of each sample's own prompt
(method/custom/smolora/integration.py, ``_compute_runtime_instruction_feat``): that path is the one here,
with the guide encoder's instruction feature. docs/METHODS.md says what else differs and why.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn

from mcit_bench.adapters.experts import attach_adapters
from mcit_bench.adapters.lora import freeze_all, language_linear_names, unfreeze_projector
from mcit_bench.adapters.separable import SeparableLoRA, SeparableRouting
from mcit_bench.core.records import IGNORE_INDEX
from mcit_bench.methods.base import Capabilities, Method, MethodOptions, RunContext, register_method
from mcit_bench.methods.search import LR, Choice


class SMoLoRAOptions(MethodOptions):
    experts: int = Field(default=8, gt=0)  # the official scripts' --expert_num: 4 VU and 4 IF
    rank: int = Field(default=16, gt=0)  # total over the experts
    alpha: float = Field(default=32.0, gt=0)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)  # LLaVA's default; the scripts pass none
    train_projector: bool = True  # the scripts pass --mm_projector_lr

    @model_validator(mode="after")
    def _rank_splits(self) -> "SMoLoRAOptions":
        if self.experts % 2 or self.rank % self.experts:
            raise ValueError(f"experts must be even and divide the rank: found {self.experts} experts, rank "
                             f"{self.rank}")
        return self


@register_method("smolora")
class SMoLoRAMethod(Method):
    capabilities = Capabilities(needs_guide=True)
    Options = SMoLoRAOptions
    search_space = {**LR, "rank": Choice((8, 16, 32))}

    def __init__(self, options: SMoLoRAOptions) -> None:
        super().__init__(options)
        self.routing = SeparableRouting()

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        freeze_all(model)
        o = self.options
        width = run.guide.width
        attach_adapters(model, language_linear_names(model),
                        lambda name, linear: SeparableLoRA(linear.in_features, linear.out_features, o.experts,
                                                           o.rank, o.alpha, o.dropout, width, self.routing))
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(".adapter." in name)
        if o.train_projector:
            unfreeze_projector(model)
        return model

    def instruction_features(self, samples: list[dict[str, Any]], run: RunContext) -> torch.Tensor:
        return run.guide.features(samples)[1].to(run.device)

    def before_step(self, batch: dict[str, torch.Tensor], run: RunContext,
                    samples: list[dict[str, Any]] | None = None) -> None:
        """The VU mean reads the prompt's tokens (image and instruction; not the answer, not padding), as
        at evaluation, where the prompt is all there is."""
        prompt = batch["attention_mask"].bool() & (batch["labels"] == IGNORE_INDEX)
        self.routing.set(prompt, self.instruction_features(samples, run))

    def route(self, batch: dict[str, torch.Tensor], run: RunContext, oracle: torch.Tensor | None = None,
              samples: list[dict[str, Any]] | None = None) -> torch.Tensor | None:
        self.routing.set(batch["attention_mask"].bool(), self.instruction_features(samples, run))
        return None
