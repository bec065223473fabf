"""Sequential fine-tuning (seqft): the lower bound of continual instruction tuning.

One LoRA on the language model's linear layers plus the vision-language projector, trained on each
task in turn and carried across tasks, with nothing done against forgetting. With ``full`` every
language-model weight trains instead of LoRA (the projector still trains; the vision tower never).
"""

from __future__ import annotations

from torch import nn

from mcit_bench.methods.base import Method, RunContext, register_method
from mcit_bench.methods.lora import LORA_SPACE, SeqFTOptions, lora_or_full


@register_method("seqft")
class SequentialFineTuning(Method):
    Options = SeqFTOptions
    search_space = LORA_SPACE

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        return lora_or_full(model, self.options)
