"""Elastic weight consolidation, online form (ewc; Kirkpatrick et al. 2017, Schwarz et al. 2018).

The seqft trainable set (LoRA + projector) persists across tasks. After each task the Fisher of the
trainable parameters is estimated on its training samples (``fisher_samples`` of them if set) from each
sample's own squared gradient (answer tokens only, as the loss is), read per sample from batches of
``fisher_batch_size`` (``mcit_bench.methods.gradients.per_sample_gradients``: the numbers batches of one
give, in a fraction of the time). On later tasks: NLL + (lambda / 2) * sum Omega (theta - theta*)^2 with
Omega = gamma * Omega_prev + F_t.

The Fisher follows mammoth's ``ewc_on`` (models/ewc_on.py at 20ff873, ``end_task``, lines 41-65): the raw average over
samples of each sample's squared gradient weighted by the probability the model gives its answer
(here exp(-mean answer-token NLL)), with no normalisation, so lambda carries the whole scale and is
chosen per model and loss (docs/METHODS.md). mammoth's penalty has no 1/2: its e_lambda is our
lambda / 2. gamma = 1 gives the sum of per-task terms of the original EWC.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from mcit_bench.methods.base import Method, RunContext, Stage, register_method, rows_of, training_batch
from mcit_bench.methods.gradients import answer_nll_each, per_sample_gradients
from mcit_bench.methods.lora import LORA_SPACE, SeqFTOptions, lora_or_full
from mcit_bench.methods.search import LogUniform, Uniform


class EWCOptions(SeqFTOptions):
    ewc_lambda: float = Field(default=1e4, ge=0.0)  # penalty and NLL gradients of one order (docs/METHODS.md)
    gamma: float = Field(default=1.0, ge=0.0, le=1.0)  # online decay of older importance
    # samples the Fisher is estimated on; None (the default): the task's whole training set, as mammoth's
    # ewc_on estimates it (docs/METHODS.md: 64 moved the ci subset's ACC by 3 points)
    fisher_samples: int | None = Field(default=None, gt=0)
    # samples a Fisher batch holds: the same Fisher at any size; lower it where [size x a trained layer's
    # weight] of per-sample gradients does not fit in memory
    fisher_batch_size: int = Field(default=16, gt=0)


@register_method("ewc")
class EWC(Method):
    stability = "ewc_lambda"
    Options = EWCOptions
    # lambda on a log grid around the gradient-matched 1e4 (benchmarks/ewc_penalty_scale.py); gamma,
    # online EWC's own setting (mammoth's ewc_on requires it: models/ewc_on.py at 20ff873, lines 23
    # and 62), from halving older importance per task to keeping it whole: with gamma 1 the importance
    # of seven tasks left the full stream's last task no room at any lambda a first study tried
    # (docs/BENCHMARKS.md)
    search_space = {**LORA_SPACE, "ewc_lambda": LogUniform(1e2, 1e6), "gamma": Uniform(0.5, 1.0)}

    def __init__(self, options: EWCOptions) -> None:
        super().__init__(options)
        self.model: nn.Module | None = None
        self.importance: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        self.model = lora_or_full(model, self.options)
        return self.model

    def trainable(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    def penalty(self) -> torch.Tensor:
        params = self.trainable()
        total = sum(((params[name] - self.anchor[name]) ** 2 * omega).sum() for name, omega in self.importance.items())
        return 0.5 * self.options.ewc_lambda * total

    def loss(self, batch: dict[str, torch.Tensor], outputs: Any, run: RunContext) -> dict[str, torch.Tensor]:
        return {"ewc": self.penalty()} if self.importance else {}

    def fisher(self, stage: Stage, run: RunContext) -> dict[str, torch.Tensor]:
        """The mean over the samples of each sample's squared gradient weighted by the probability the
        model gives its answer (mammoth's exp_cond_prob), read per sample from whole batches; where the
        first batch's samples cannot be told apart (``per_sample_gradients``), every sample goes alone."""
        data = self.train_data(stage, run)
        generator = torch.Generator().manual_seed(run.seed + stage.index)
        count = self.options.fisher_samples or len(data)
        indices = torch.randperm(len(data), generator=generator)[:count].tolist()
        params = self.trainable()
        sums = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
        size = self.options.fisher_batch_size
        was_training = self.model.training
        self.model.train()
        whole = None  # the first batch's answer: can this model's samples be told apart in a batch?
        try:
            for start in range(0, len(indices), size):
                chunk = indices[start:start + size]
                together = self.per_sample(run, params, data, chunk) if whole is not False else None
                whole = together is not None if whole is None else whole
                pieces = [together] if together is not None else [
                    self.per_sample(run, params, data, [index]) for index in chunk]
                for losses, grads in pieces:
                    answer_probability = torch.exp(-losses)
                    for name, grad in grads.items():
                        sums[name] += torch.einsum("s,s...->...", answer_probability, grad ** 2)
        finally:
            self.model.zero_grad(set_to_none=True)
            self.model.train(was_training)
        return {name: (value / len(indices)).to(params[name].dtype) for name, value in sums.items()}

    def per_sample(self, run: RunContext, params: dict[str, nn.Parameter], data: Any,
                   indices: list[int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        self.model.zero_grad(set_to_none=True)
        batch = training_batch(run, rows_of(data, indices))
        return per_sample_gradients(self.model, params, batch, answer_nll_each)

    def after_task(self, stage: Stage, run: RunContext) -> None:
        fisher = self.fisher(stage, run)
        self.importance = {name: self.options.gamma * self.importance.get(name, 0) + f for name, f in fisher.items()}
        self.anchor = {name: p.detach().clone() for name, p in self.trainable().items()}

    def state_dict(self) -> dict[str, Any]:
        return {**{f"importance.{k}": v for k, v in self.importance.items()},
                **{f"anchor.{k}": v for k, v in self.anchor.items()}}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        self.importance = {k[len("importance."):]: v.to(self.device_of(model)) for k, v in state.items()
                           if k.startswith("importance.")}
        self.anchor = {k[len("anchor."):]: v.to(self.device_of(model)) for k, v in state.items()
                       if k.startswith("anchor.")}

    @staticmethod
    def device_of(model: nn.Module) -> torch.device:
        return next(model.parameters()).device
