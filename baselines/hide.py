"""HiDe-LLaVA (hide; Guo et al., ACL 2025, "HiDe-LLaVA: Hierarchical Decoupling for Continual Instruction
Tuning of Multimodal Large Language Model"; official code Ghy0501/HiDe-LLaVA, the same code as MCITlib's
HiDe/).

One LoRA expert per task on every linear layer of the language model (HiDe/peft/tuners/clitmoelora.py,
lines 432-540 in MCITlib: ``loraA``/``loraB`` hold ``expert_num`` slices). While a task trains, only its
expert is in the forward and trains, in every layer (clitmoelora.py, lines 404-407). A frozen CLIP's
image and instruction features of each training sample update the task's anchors, their running means
(llava/model/llava_arch.py, lines 183-195). At inference the layers split (the "hierarchical
decoupling"): every layer but the last adds the task-general fusion ``(sum_i B_i)(sum_i A_i) x`` over the
experts trained so far, the A's and the B's summed separately so that cross terms B_i A_j enter
(clitmoelora.py, lines 463-470 and 515-522); the last layer adds ``sum_i w_i B_i A_i x`` with w the softmax
of the mean of the image and the text cosine similarity to each task's anchors at temperature 0.1
(llava_arch.py, lines 196-215; clitmoelora.py, lines 417-425). A ~ N(0, 0.01^2), B = 0 (lines 300-302);
the scripts' scale lora_alpha / lora_r = 2 and UCIT's 16 of rank 96 a task over 6 experts
(configs/model_configs/LLaVA/UCIT/train/task1.json); dropout 0.05; the projector trains
(--mm_projector_lr). docs/METHODS.md says where this differs from the released code and why.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import torch
from pydantic import Field

from mcit_bench.methods.base import Capabilities, MethodOptions, RunContext, register_method
from mcit_bench.methods.guided import GuidedBlocksMethod
from mcit_bench.methods.search import LR, Choice

LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")


class HiDeOptions(MethodOptions):
    rank: int = Field(default=16, gt=0)  # each task's expert
    alpha: float = Field(default=32.0, gt=0)  # scale alpha / rank = 2, the scripts' lora_alpha / lora_r
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    temperature: float = Field(default=0.1, gt=0.0)
    # the task-general fusion below the last layer: the official code's (sum B)(sum A) x, cross terms
    # included, or the sum of each expert's own update, sum B_k A_k x (Prism's port)
    fusion: Literal["code", "updates"] = "code"
    train_projector: bool = True


def expert_weights(similarity: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
    """Each sample's softmax weight of each task's expert in the last layer: the mean of its image and
    text cosine similarities to the task's anchors, over the temperature. [samples, tasks]."""
    return torch.softmax((similarity["image"] + similarity["text"]) / 2 / temperature, dim=-1)


def last_layer(names: list[str]) -> list[str]:
    """The adapted linear layers of the language model's last decoder layer (the official code's layer 31
    of LLaVA-7B's 32)."""
    indices = {name: int(found.group(1)) for name in names if (found := LAYER_INDEX.search(name))}
    top = max(indices.values())
    return [name for name, index in indices.items() if index == top]


@register_method("hide")
class HiDe(GuidedBlocksMethod):
    capabilities = Capabilities(grows_params=True, selects_task=True, needs_guide=True)
    Options = HiDeOptions
    search_space = {**LR, "rank": Choice((8, 16, 32))}

    def route(self, batch: dict[str, torch.Tensor], run: RunContext, oracle: torch.Tensor | None = None,
              samples: list[dict[str, Any]] | None = None) -> torch.Tensor | None:
        weights = self.routed_weights(run, oracle, samples,
                                      lambda found: expert_weights(found, self.options.temperature))
        if weights is None:
            return None
        top = set(last_layer(list(self.layers)))
        every = torch.ones(1, self.blocks.count, device=run.device)
        below = (None, True) if self.options.fusion == "code" else (every, False)
        for name, layer in self.layers.items():  # the last layer mixes the experts, every other fuses them
            layer.block_weights, layer.fused = (weights.to(run.device), False) if name in top else below
        return weights.argmax(dim=1).to(run.device)
