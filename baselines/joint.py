"""Multi-task joint training (joint): the upper bound.

One run on the union of every task's training data with the same trainable set and the same total
step budget as sequential fine-tuning (steps per task x tasks), evaluated once on every task. Its
accuracy matrix repeats that one row after every stage, and results flag it ``upper_bound``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from mcit_bench.methods.base import Capabilities, Method, RunContext, Stage, register_method
from mcit_bench.methods.lora import LORA_SPACE, SeqFTOptions, lora_or_full

if TYPE_CHECKING:
    from mcit_bench.data.stream import TaskStream


@register_method("joint")
class JointTraining(Method):
    capabilities = Capabilities(upper_bound=True)
    Options = SeqFTOptions
    search_space = LORA_SPACE

    def stages(self, stream: TaskStream) -> list[Stage]:
        return [Stage(1, tuple(stream.tasks))]

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        return lora_or_full(model, self.options)
