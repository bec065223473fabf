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

from mcit_bench.methods.base import Capabilities, MethodOptions, RunContext, register_method
from mcit_bench.methods.guided import GuidedBlocksMethod
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


def subspace_weights(similarity: dict[str, torch.Tensor], options: DiscoOptions) -> torch.Tensor:
    """Each sample's softmax weight of each task from its cosine similarities to the tasks' prototypes
    ([samples, tasks] by kind), over the temperature."""
    chosen = (0.5 * similarity["text"] + 0.5 * similarity["image"] if options.similarity == "both"
              else similarity[options.similarity])
    return torch.softmax(chosen / options.temperature, dim=-1)


@register_method("disco")
class Disco(GuidedBlocksMethod):
    capabilities = Capabilities(grows_params=True, selects_task=True, needs_guide=True)
    Options = DiscoOptions
    search_space = {**LR, "rank": Choice((8, 16, 32))}

    def route(self, batch: dict[str, torch.Tensor], run: RunContext, oracle: torch.Tensor | None = None,
              samples: list[dict[str, Any]] | None = None) -> torch.Tensor | None:
        weights = self.routed_weights(run, oracle, samples, lambda found: subspace_weights(found, self.options))
        if weights is None:
            return None
        for layer in self.layers.values():
            layer.block_weights = weights.to(run.device)
        return weights.argmax(dim=1).to(run.device)
