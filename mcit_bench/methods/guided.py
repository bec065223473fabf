"""What the guided methods share: each task's prototype features from the frozen guide (the mean image and
instruction features of its training split, never of its test split) and the cosine similarities of a
sample's features to them (DISCO, HiDe-LLaVA, SAME); and, for DISCO and HiDe-LLaVA, a LoRA block per task
trained alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mcit_bench.methods.base import RunContext, Stage, rows_of
from mcit_bench.methods.lora import TaskBlocksMethod

KINDS = ("image", "text")


def with_prototypes_of(prototypes: dict[str, torch.Tensor], task: int, stage: Stage,
                       run: RunContext) -> dict[str, torch.Tensor]:
    """``prototypes`` (kind -> [tasks, feature width]) with row ``task`` set to the stage's: the mean guide
    features of its training split, by kind; the rows after it dropped."""
    train = run.train_data[stage.tasks[0].name]
    features = dict(zip(KINDS, run.guide.features(rows_of(train, list(range(len(train)))))))
    updated = {}
    for kind in KINDS:
        mean = features[kind].mean(dim=0)
        known = prototypes.get(kind, mean.new_zeros(0, mean.shape[0]))
        updated[kind] = torch.cat([known[:task], mean[None]])
    return updated


def prototype_similarities(prototypes: dict[str, torch.Tensor], samples: list[dict[str, Any]],
                           run: RunContext) -> dict[str, torch.Tensor]:
    """Each sample's cosine similarity to each task's prototype, by kind: [samples, tasks]."""
    features = dict(zip(KINDS, run.guide.features(samples)))
    return {kind: features[kind] @ nn.functional.normalize(prototypes[kind], dim=-1).T for kind in KINDS}


class GuidedBlocksMethod(TaskBlocksMethod):
    """A block per task (A ~ N(0, 0.01^2), B = 0, as both official layers start them), in training the
    current task's block alone in the forward, and per-task prototypes of the guide's features."""

    down_std = 0.01

    def __init__(self, options) -> None:
        super().__init__(options)
        self.prototypes: dict[str, torch.Tensor] = {}  # kind -> [trained tasks, feature width]

    def before_task(self, stage: Stage, run: RunContext) -> None:
        super().before_task(stage, run)
        only_current = nn.functional.one_hot(torch.tensor([self.task]), self.blocks.count).float().to(run.device)
        for layer in self.layers.values():
            layer.block_weights, layer.fused = only_current, False

    def after_task(self, stage: Stage, run: RunContext) -> None:
        """The task's prototypes: the mean guide features of its training split."""
        self.prototypes = with_prototypes_of(self.prototypes, self.task, stage, run)

    def similarities(self, samples: list[dict[str, Any]], run: RunContext) -> dict[str, torch.Tensor]:
        """Each sample's cosine similarity to each trained task's prototype, by kind: [samples, tasks]."""
        return prototype_similarities(self.prototypes, samples, run)

    def routed_weights(self, run: RunContext, oracle: torch.Tensor | None, samples: list[dict[str, Any]] | None,
                       mixture: Callable[[dict[str, torch.Tensor]], torch.Tensor]) -> torch.Tensor | None:
        """Each evaluation sample's weight of every block: the true task's alone for the oracle, else
        ``mixture`` of its similarities over the trained tasks; None before any task has prototypes."""
        if not self.prototypes:
            return None
        if oracle is not None:
            return nn.functional.one_hot(oracle.cpu(), self.blocks.count).float()
        weights = mixture(self.similarities(samples, run))
        return nn.functional.pad(weights, (0, self.blocks.count - weights.shape[1]))

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = super().state_dict()
        state.update({f"prototype.{kind}": value for kind, value in self.prototypes.items()})
        return state

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.prototypes = {kind: state[f"prototype.{kind}"].float() for kind in KINDS if f"prototype.{kind}" in state}
