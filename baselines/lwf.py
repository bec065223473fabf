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

The teacher answers each training sample once per task, in evaluation mode (no dropout), as mammoth's
``begin_task`` computes the old model's outputs on the task's data before training it: its logits at
the answer positions are kept per sample for the stage (``teacher_cache_mb`` bounds them; a sample
beyond the bound is answered again, to the same values) and reused whenever a later epoch draws the
sample again, so the teacher costs one forward pass per sample, not one per draw.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from mcit_bench.core.records import IGNORE_INDEX
from mcit_bench.methods.base import Method, RunContext, Stage, register_method, training_batch
from mcit_bench.methods.distributed import on_any_process
from mcit_bench.methods.lora import LORA_SPACE, SeqFTOptions, lora_or_full
from mcit_bench.methods.search import Choice, Uniform


class LwFOptions(SeqFTOptions):
    lwf_lambda: float = Field(default=0.5, ge=0.0)  # mammoth's alpha
    temperature: float = Field(default=2.0, gt=0.0)  # mammoth's softmax_temp
    teacher_cache_mb: float = Field(default=1024.0, ge=0.0)  # the teacher's answer logits kept for a stage


def teacher_key(row: dict[str, Any]) -> tuple:
    """What identifies a training sample to the teacher: what the model reads of it and its answer."""
    return (row.get("id"), str(row.get("image")), row.get("instruction"), row.get("target"))


def answer_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[answer positions, vocabulary]: the logits at the positions that predict answer tokens, sample by
    sample in batch order (shifted by one, as for the NLL)."""
    return logits[:, :-1][labels[:, 1:] != IGNORE_INDEX]


def distillation_kl(student_logits: torch.Tensor, teacher_answers: torch.Tensor, labels: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """Mean KL(teacher || student) of the tempered distributions at the positions that predict answer tokens;
    ``teacher_answers`` are the teacher's logits there (:func:`answer_logits`)."""
    student = answer_logits(student_logits, labels).float() / temperature
    teacher = teacher_answers.float() / temperature
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
        self.answers: dict[tuple, torch.Tensor] = {}  # this stage's teacher logits at each sample's answer
        self.kept_bytes = 0
        # the micro-batch's keys, and the rows the teacher has not answered yet made into a batch
        self.keys: list[tuple] = []
        self.unanswered: tuple[list[int], dict[str, torch.Tensor]] | None = None

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        self.model = lora_or_full(model, self.options)
        return self.model

    def before_task(self, stage: Stage, run: RunContext) -> None:
        if stage.index > 1:
            self.teacher = {name: p.detach().clone() for name, p in self.model.named_parameters() if p.requires_grad}
        self.answers, self.kept_bytes = {}, 0

    def before_step(self, batch: dict[str, torch.Tensor], run: RunContext,
                    samples: list[dict[str, Any]] | None = None) -> None:
        if not self.teacher:
            return
        self.keys = [teacher_key(row) for row in samples]
        missing = [i for i, key in enumerate(self.keys) if key not in self.answers]
        # a sharded model's forward needs every process: when any has a sample to answer, all run the teacher
        # (one with none answers its batch and keeps its answers as they were)
        if not on_any_process(bool(missing)):
            self.unanswered = None
        elif len(missing) in (0, len(samples)):
            self.unanswered = (missing, batch)
        else:
            self.unanswered = (missing, training_batch(run, [samples[i] for i in missing]))

    @torch.no_grad()
    def teacher_answers(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The teacher's logits at each sample's answer positions, in evaluation mode (no dropout)."""
        self.model.eval()
        try:
            logits = functional_call(self.model, self.teacher, args=(), kwargs=batch, strict=False).logits
        finally:
            self.model.train()
        counts = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1).tolist()
        return list(answer_logits(logits, batch["labels"]).split(counts))

    def loss(self, batch: dict[str, torch.Tensor], outputs: Any, run: RunContext) -> dict[str, torch.Tensor]:
        if not self.teacher:
            return {}
        fresh: dict[int, torch.Tensor] = {}
        if self.unanswered is not None:
            rows, unanswered = self.unanswered
            fresh = dict(zip(rows, self.teacher_answers(unanswered)))
            budget = self.options.teacher_cache_mb * 2**20
            for row, answers in fresh.items():
                size = answers.numel() * answers.element_size()
                if self.kept_bytes + size <= budget:
                    self.answers[self.keys[row]] = answers
                    self.kept_bytes += size
        teacher = torch.cat([fresh[row] if row in fresh else self.answers[key] for row, key in enumerate(self.keys)])
        kl = distillation_kl(outputs.logits, teacher, batch["labels"], self.options.temperature)
        return {"lwf": self.options.lwf_lambda * kl}

    def state_dict(self) -> dict[str, Any]:
        return {f"teacher.{name}": value for name, value in self.teacher.items()}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        device = next(model.parameters()).device
        self.teacher = {k[len("teacher."):]: v.to(device) for k, v in state.items() if k.startswith("teacher.")}
