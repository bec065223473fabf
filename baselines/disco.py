"""DISCO (disco; Guo et al., ICCV 2025, "Federated Continual Instruction Tuning"; official code
Ghy0501/FCIT, whose continual, non-federated form is MCITlib's DISCO/; Prism runs it as DisCo).

One LoRA subspace per task on every linear layer of the language model: MCITlib's layer holds
``expert_num`` slices of A and B, one per task (DISCO/CoIN/peft/tuners/clitmoelora.py, lines 432-501).
While a task trains, only its own subspace is in the forward and trains (DISCO/llava/model/llava_arch.py,
lines 186-206: every projection's ``lora_id`` is the current task). A frozen CLIP gives each training
sample's instruction and image features; each task keeps their mean (llava_arch.py, lines 188-197). At
inference a sample's subspaces are weighted by the softmax of the cosine similarity of its instruction
feature to each task's, at temperature 0.05 (llava_arch.py, lines 176-182 and 207-218; the image-and-text
average is commented out there, the text similarity alone is used), and the layer adds
``scale * sum_k w_k B_k A_k x`` (clitmoelora.py, lines 400-420: the weights on a block diagonal between
A and B). A ~ N(0, 0.01^2) and B = 0 (clitmoelora.py, lines 297-299); dropout 0.05 (train.py, line 106);
scale lora_alpha / lora_r = 2 (the scripts pass --lora_alpha $((RANK * 2))); UCIT's configs give each
task 16 of rank 96 over 6 experts (configs/model_configs/LLaVA/UCIT/train/task1.json); the projector
trains (--mm_projector_lr). docs/METHODS.md says where this differs from the released code and why.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from mcit_bench.methods.base import Capabilities, MethodOptions, RunContext, Stage, register_method, rows_of
from mcit_bench.methods.lora import TaskBlocksMethod
from mcit_bench.methods.search import LR, Choice


class DiscoOptions(MethodOptions):
    rank: int = Field(default=16, gt=0)  # each task's subspace
    alpha: float = Field(default=32.0, gt=0)  # scale alpha / rank = 2, the scripts' lora_alpha / lora_r
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    temperature: float = Field(default=0.05, gt=0.0)
    # which features the routing compares: the released code's text alone, its commented-out average of
    # text and image similarities, or the image alone
    similarity: Literal["text", "both", "image"] = "text"
    train_projector: bool = True


def subspace_weights(image: torch.Tensor, text: torch.Tensor, prototypes: dict[str, torch.Tensor],
                     options: DiscoOptions) -> torch.Tensor:
    """Each sample's softmax weight of each task: cosine similarity of its unit-length features to the
    tasks' prototypes (normalised here), over the temperature. [samples, tasks]."""
    unit = {kind: nn.functional.normalize(value, dim=-1) for kind, value in prototypes.items()}
    similarity = {"text": text @ unit["text"].T, "image": image @ unit["image"].T}
    chosen = (0.5 * similarity["text"] + 0.5 * similarity["image"] if options.similarity == "both"
              else similarity[options.similarity])
    return torch.softmax(chosen / options.temperature, dim=-1)


@register_method("disco")
class Disco(TaskBlocksMethod):
    capabilities = Capabilities(grows_params=True, selects_task=True, needs_guide=True)
    Options = DiscoOptions
    down_std = 0.01
    search_space = {**LR, "rank": Choice((8, 16, 32))}

    def __init__(self, options: MethodOptions) -> None:
        super().__init__(options)
        # each trained task's mean image and instruction features: [tasks, feature width]
        self.prototypes: dict[str, torch.Tensor] = {}

    def before_task(self, stage: Stage, run: RunContext) -> None:
        super().before_task(stage, run)
        self.set_weights(nn.functional.one_hot(torch.tensor([self.task]), self.blocks.count).float(), run.device)

    def after_task(self, stage: Stage, run: RunContext) -> None:
        """The task's prototypes: the mean features of its training samples (never of the test split)."""
        train = run.train_data[stage.tasks[0].name]
        image, text = run.guide.features(rows_of(train, list(range(len(train)))))
        for kind, mean in (("image", image.mean(dim=0)), ("text", text.mean(dim=0))):
            known = self.prototypes.get(kind, mean.new_zeros(0, mean.shape[0]))
            self.prototypes[kind] = torch.cat([known[:self.task], mean[None]])

    def set_weights(self, weights: torch.Tensor, device: torch.device) -> None:
        for layer in self.layers.values():
            layer.block_weights = weights.to(device)

    def route(self, batch: dict[str, torch.Tensor], run: RunContext, oracle: torch.Tensor | None = None,
              samples: list[dict[str, Any]] | None = None) -> torch.Tensor | None:
        if not self.prototypes:
            return None
        trained = self.prototypes["text"].shape[0]
        if oracle is not None:
            weights = nn.functional.one_hot(oracle.cpu(), self.blocks.count).float()
        else:
            image, text = run.guide.features(samples)
            mixture = subspace_weights(image, text, self.prototypes, self.options)
            weights = nn.functional.pad(mixture, (0, self.blocks.count - trained))
        self.set_weights(weights, run.device)
        return weights.argmax(dim=1).to(run.device)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = super().state_dict()
        state.update({f"prototype.{kind}": value for kind, value in self.prototypes.items()})
        return state

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        super().load_state_dict(state, model)
        self.prototypes = {kind: state[f"prototype.{kind}"].float() for kind in ("image", "text")
                           if f"prototype.{kind}" in state}
