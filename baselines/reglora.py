"""RegLoRA (reglora; the regularisation half of SEFE, Chen et al., ICML 2025, "SEFE: Superficial and
Essential Forgetting Eliminator for Multimodal Continual Instruction Tuning"; official code
jinpeng0528/SEFE).

Each task trains a new LoRA on every linear layer of the language model over the weights the earlier
tasks left (the official scripts merge each task's LoRA into the model before the next:
``scripts/Train/2_TextVQA.sh``; here too, its block kept for the checkpoint). After a task its
key elements are found: the 2% of entries of B A with the largest magnitude in every layer
(``key_elements_identification.py``), added to those of the earlier tasks. While a later task trains,
the loss adds ``reg_weight`` (2.5e3) times the mean over the adapted layers of the mean magnitude of
the new B A at the key elements (``modeling_llama.py``, lines 780-801 and 1111-1131;
``llava_llama.py``, line 114), so the new update leaves the elements earlier tasks rely on alone.

The other half of SEFE, answer-style diversification (ASD), rewrites the training answers with a large
language model; docs/METHODS.md says where it can run.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from mcit_bench.adapters.experts import TaskBlocksLoRA
from mcit_bench.methods.base import Capabilities, MethodOptions, RunContext, Stage, register_method
from mcit_bench.methods.lora import TaskBlocksMethod
from mcit_bench.methods.search import LR, Choice, LogUniform


class RegLoRAOptions(MethodOptions):
    rank: int = Field(default=16, gt=0)  # seqft's on mcit-tiny (the scripts: 128 on 7B)
    alpha: float = Field(default=32.0, gt=0)  # alpha / rank = 2, the scripts' 256 / 128
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)  # LLaVA's default: the scripts pass none
    key_fraction: float = Field(default=0.02, gt=0.0, le=1.0)  # key_elements_identification.py
    reg_weight: float = Field(default=2.5e3, ge=0.0)  # llava_llama.py, line 114
    train_projector: bool = True  # --mm_projector_lr 2e-5


def key_elements(update: torch.Tensor, fraction: float) -> torch.Tensor:
    """The (row, column) positions of the ``fraction`` of entries of ``update`` largest in magnitude,
    as int(fraction * rows * columns) pairs, largest first (torch.topk, as the code takes them)."""
    count = int(fraction * update.shape[0] * update.shape[1])
    flat = update.abs().flatten().topk(count).indices
    return torch.stack([torch.div(flat, update.shape[1], rounding_mode="floor"), flat % update.shape[1]], dim=1)


def entries(layer: TaskBlocksLoRA, block: int, positions: torch.Tensor) -> torch.Tensor:
    """(B A)[rows, columns] of one block at the given positions, without forming B A: each entry is the
    dot product of a row of B and a column of A (the code forms the whole product; the values agree)."""
    rows, columns = positions[:, 0], positions[:, 1]
    return (layer.lora_B[block][rows] * layer.lora_A[block][:, columns].T).sum(-1)


@register_method("reglora")
class RegLoRA(TaskBlocksMethod):
    capabilities = Capabilities(grows_params=True)
    stability = "reg_weight"
    Options = RegLoRAOptions
    folds = True  # scripts/Train/2_TextVQA.sh, lines 48-51: merge_lora_weights.py after training
    # the weight of the key elements' term on a log grid around the code's 2.5e3
    search_space = {**LR, "rank": Choice((8, 16, 32)), "reg_weight": LogUniform(2.5e2, 2.5e4)}

    def __init__(self, options: RegLoRAOptions) -> None:
        super().__init__(options)
        self.keys: dict[str, torch.Tensor] = {}  # per layer, the key positions of every earlier task

    def penalty(self) -> torch.Tensor:
        """reg_weight times the mean over layers of mean |(B A)[key elements]| of the task's block."""
        means = [entries(layer, self.task, self.keys[name]).abs().mean() for name, layer in self.layers.items()]
        return self.options.reg_weight * torch.stack(means).mean()

    def loss(self, batch: dict[str, torch.Tensor], outputs: Any, run: RunContext) -> dict[str, torch.Tensor]:
        return {"key_elements": self.penalty()} if self.keys else {}

    @torch.no_grad()
    def after_task(self, stage: Stage, run: RunContext) -> None:
        """The task's key elements joined to the earlier ones (concatenated, as the code keeps them)."""
        for name, layer in self.layers.items():
            found = key_elements(layer.lora_B[self.task].float() @ layer.lora_A[self.task].float(),
                                 self.options.key_fraction)
            self.keys[name] = torch.cat([found, self.keys[name]]) if name in self.keys else found
        super().after_task(stage, run)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **{f"keys.{name}": keys for name, keys in self.keys.items()}}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        device = next(model.parameters()).device
        self.keys = {key[len("keys."):]: value.to(device) for key, value in state.items() if key.startswith("keys.")}
