"""The LoRA machinery seqft, EWC, LwF, replay and joint share: their options, search space and
trainable set. It lives here, not in a plugin, so no plugin imports another."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import nn

from mcit_bench.adapters.lora import freeze_all, inject_lora, unfreeze_projector
from mcit_bench.methods.base import MethodOptions
from mcit_bench.methods.search import LR, Choice, SearchSpace
from mcit_bench.models.anatomy import language_model


class SeqFTOptions(MethodOptions):
    flags: ClassVar[tuple[str, ...]] = ("full",)
    full: bool = False  # train all language-model weights instead of LoRA
    lora_rank: int = Field(default=16, gt=0)
    lora_alpha: float = Field(default=32.0, gt=0)
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    train_projector: bool = True

    def trains_base_weights(self) -> bool:
        return self.full


# the LoRA methods' common space: learning rate and rank (lora_alpha stays fixed, as CoIN fixes it)
LORA_SPACE: SearchSpace = {**LR, "lora_rank": Choice((8, 16, 32))}


def lora_or_full(model: nn.Module, options: SeqFTOptions) -> nn.Module:
    """The default trainable set of METHODS.md: LoRA (or every LM weight) plus the projector."""
    if options.full:
        freeze_all(model)
        for parameter in language_model(model).parameters():
            parameter.requires_grad_(True)
    else:
        model = inject_lora(model, options.lora_rank, options.lora_alpha, options.lora_dropout)
    if options.train_projector:
        unfreeze_projector(model)
    return model
