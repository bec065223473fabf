"""Learning without forgetting (lwf; Li & Hoiem 2017), for instruction tuning.

The seqft trainable set persists across tasks. Before each task after the first, the trainable
weights are copied as the teacher; the teacher runs on the new task's own inputs (no stored data),
and the student is pulled towards its answer-token distributions:
NLL + lambda * KL(softmax(z_old / tau) || softmax(z_new / tau)), over the positions that predict
answer tokens (logits shifted by one, as for the NLL).

The defaults and the scale follow mammoth's ``lwf`` (models/lwf.py at 0d727a7, lines 18-31: alpha
0.5, softmax_temp 2, the cross-entropy of the tempered distributions with no tau^2 factor) and Li &
Hoiem's loss, which has none either; KL differs from that cross-entropy by the teacher's entropy, a constant, so the
gradients are the same.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from mcit_bench.core.records import IGNORE_INDEX
from mcit_bench.methods.base import Method, RunContext, Stage, register_method
from mcit_bench.methods.lora import LORA_SPACE, SeqFTOptions, lora_or_full
from mcit_bench.methods.search import Choice, Uniform


class LwFOptions(SeqFTOptions):
    lwf_lambda: float = Field(default=0.5, ge=0.0)  # mammoth's alpha
    temperature: float = Field(default=2.0, gt=0.0)  # mammoth's softmax_temp


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """Mean KL(teacher || student) of the tempered distributions at the positions that predict answer tokens."""
    predicts_answer = labels[:, 1:] != IGNORE_INDEX
    student = student_logits[:, :-1][predicts_answer].float() / temperature
    teacher = teacher_logits[:, :-1][predicts_answer].float() / temperature
    return F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")


@register_method("lwf")
class LwF(Method):
    stability = "lwf_lambda"
    Options = LwFOptions
    # mammoth's alpha and softmax temperature, around its defaults 0.5 and 2
    search_space = {**LORA_SPACE, "lwf_lambda": Uniform(0.1, 2.0), "temperature": Choice((1.0, 2.0, 4.0))}

    def __init__(self, options: LwFOptions) -> None:
        super().__init__(options)
        self.model: nn.Module | None = None
        self.teacher: dict[str, torch.Tensor] = {}

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        self.model = lora_or_full(model, self.options)
        return self.model

    def before_task(self, stage: Stage, run: RunContext) -> None:
        if stage.index > 1:
            self.teacher = {name: p.detach().clone() for name, p in self.model.named_parameters() if p.requires_grad}

    def loss(self, batch: dict[str, torch.Tensor], outputs: Any, run: RunContext) -> dict[str, torch.Tensor]:
        if not self.teacher:
            return {}
        with torch.no_grad():
            teacher_logits = functional_call(self.model, self.teacher, args=(), kwargs=batch, strict=False).logits
        kl = distillation_kl(outputs.logits, teacher_logits, batch["labels"], self.options.temperature)
        return {"lwf": self.options.lwf_lambda * kl}

    def state_dict(self) -> dict[str, Any]:
        return {f"teacher.{name}": value for name, value in self.teacher.items()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        device = next(model.parameters()).device
        self.teacher = {k[len("teacher."):]: v.to(device) for k, v in state.items() if k.startswith("teacher.")}
