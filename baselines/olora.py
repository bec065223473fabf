"""O-LoRA (olora; Wang et al., EMNLP Findings 2023, "Orthogonal Subspace Learning for Language Model
Continual Learning"; official code cmnfriend/O-LoRA).

Each task trains a new LoRA block on every linear layer of the language model; the earlier tasks'
blocks stay in the forward, frozen (src/run_uie_lora.py, lines 405-416: only ``loranew_`` trains).
The loss adds, for every layer, the L1 norm of the entries of A_old A_t^T, where A_old stacks the
earlier blocks' down-projections, weighted by lambda1, and the L2 (Frobenius) norm of each of the
new block's matrices, weighted by lambda2 (src/uie_trainer_lora.py, lines 91-109). After a task the
new block joins the old ones (src/peft/utils/save_and_load.py, lines 36-50). Defaults are the
official scripts': rank 8, alpha 32, dropout 0.1 (src/run_uie_lora.py, lines 115-117 and 381),
lambda1 0.5, lambda2 0 (scripts/order_1.sh). The projector trains on every task, as the LLaVA ports
train it (MCITlib's OLoRA scripts: ``--mm_projector_lr``). Where MCITlib's port differs, see
docs/METHODS.md.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from mcit_bench.methods.base import Capabilities, MethodOptions, RunContext, register_method
from mcit_bench.methods.lora import TaskBlocksMethod
from mcit_bench.methods.search import LR, Choice, LogUniform


class OLoRAOptions(MethodOptions):
    rank: int = Field(default=8, gt=0)  # per task: run_uie_lora.py's lora_dim
    alpha: float = Field(default=32.0, gt=0)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    lambda1: float = Field(default=0.5, ge=0.0)  # orthogonality
    lambda2: float = Field(default=0.0, ge=0.0)  # L2 of the new block
    train_projector: bool = True


def orthogonality(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """sum |A_old A_new^T|: zero exactly when every new row is orthogonal to every old row."""
    return (old @ new.T).abs().sum()


@register_method("olora")
class OLoRA(TaskBlocksMethod):
    capabilities = Capabilities(grows_params=True)
    stability = "lambda1"
    Options = OLoRAOptions
    # the rank of each task's block and the weight of the orthogonality term around the code's 0.5
    search_space = {**LR, "rank": Choice((4, 8, 16)), "lambda1": LogUniform(0.05, 5.0)}

    def penalties(self) -> dict[str, torch.Tensor]:
        """lambda1 * sum over layers of |A_old A_t^T|_1 and lambda2 * sum of ||A_t|| + ||B_t||."""
        o, t = self.options, self.task
        terms: dict[str, torch.Tensor] = {}
        if t > 0 and o.lambda1 > 0:
            terms["orthogonal"] = o.lambda1 * sum(
                orthogonality(torch.cat(list(layer.lora_A[:t]), dim=0), layer.lora_A[t])
                for layer in self.layers.values())
        if o.lambda2 > 0:
            terms["l2"] = o.lambda2 * sum(layer.lora_A[t].norm() + layer.lora_B[t].norm()
                                          for layer in self.layers.values())
        return terms

    def loss(self, batch: dict[str, torch.Tensor], outputs: Any, run: RunContext) -> dict[str, torch.Tensor]:
        return self.penalties()
