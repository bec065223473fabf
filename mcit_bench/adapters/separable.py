"""SMoLoRA's separable mixture of LoRA experts (Minato-Zackie/SMoLoRA, PEFT_SMoLoRA/peft/tuners/smolora.py).

A layer's rank r is split over E experts of rank r / E: the first E / 2 answer to a visual-understanding
(VU) router, the last E / 2 to an instruction-following (IF) router. Each router picks one expert per
sample (top-1, a one-hot), the VU router from the mean of the layer's input over the sample's tokens, the IF
router from an embedding of the sample's instruction. The two experts' outputs are weighted by a per-token
softmax over two learned scores (``lora_fc_A`` on the VU output, ``lora_fc_B`` on the IF output) and added
to the frozen layer (smolora.py lines 405-474):

    h = W0 x + a_VU(x) * s * B_vu A_vu x + a_IF(x) * s * B_if A_if x,   s = alpha / r.

The routers' one-hot is written with a constant (``scatter_(-1, index, 1.0)``), so no gradient reaches
them: they stay at their random initialisation, and here they are buffers. All experts are computed in one
stacked matmul each way and masked, never in a Python loop.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mcit_bench.core.errors import ConfigError


class SeparableRouting:
    """What a batch gives every SMoLoRA layer of one model: which tokens a sample's VU mean reads, and its
    instruction embedding. Set by the method before each training step and evaluation batch."""

    def __init__(self) -> None:
        self.token_weights: torch.Tensor | None = None  # [samples, tokens], each row summing to 1
        self.instruction: torch.Tensor | None = None  # [samples, embedding width]

    def set(self, token_mask: torch.Tensor, instruction: torch.Tensor) -> None:
        mask = token_mask.float()
        self.token_weights = mask / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        self.instruction = instruction


def _linear_init(rows: int, columns: int) -> torch.Tensor:
    """An ``nn.Linear`` weight at its default initialisation (Kaiming-uniform, a = sqrt(5))."""
    weight = torch.empty(rows, columns)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    return weight


class SeparableLoRA(nn.Module):
    def __init__(self, d_in: int, d_out: int, experts: int, rank: int, alpha: float, dropout: float,
                 instruction_width: int, routing: SeparableRouting) -> None:
        super().__init__()
        if experts < 2 or experts % 2 or rank % experts:
            raise ConfigError(f"SMoLoRA needs an even number of experts (found {experts}) that divides the rank "
                              f"({rank}); choose, e.g., 8 experts and rank 16")
        self.d_out, self.half = d_out, experts // 2
        self.expert_rank = rank // experts
        self.scale = alpha / rank
        self.routing = routing
        self.dropout = nn.Dropout(dropout)
        # each expert's A ~ N(0, 0.01^2), B = 0 (smolora.py, reset_lora_parameters)
        self.lora_A = nn.Parameter(torch.randn(rank, d_in) * 0.01)  # expert e: rows e*r_e .. (e+1)*r_e
        self.lora_B = nn.Parameter(torch.zeros(d_out, rank))
        self.lora_fc_A = nn.Parameter(_linear_init(1, d_out))  # the VU output's score
        self.lora_fc_B = nn.Parameter(_linear_init(1, d_out))  # the IF output's score
        self.register_buffer("vu_gate", _linear_init(self.half, d_in))
        self.register_buffer("ins_gate", _linear_init(self.half, instruction_width))
        self.vu_choice: torch.Tensor | None = None  # the last full pass's choice, kept for decoding steps

    def choices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sample's VU expert and IF expert (indices in 0 .. E/2 - 1)."""
        weights, instruction = self.routing.token_weights, self.routing.instruction
        if weights is None or instruction is None or weights.shape[0] != x.shape[0]:
            raise RuntimeError("an SMoLoRA layer ran without its batch's routing (SeparableRouting.set) or with "
                               "another batch's")
        if x.shape[1] == weights.shape[1]:  # a full pass: the mean of the sample's own tokens
            mean = torch.einsum("btd,bt->bd", x, weights.to(x.device, x.dtype))
            self.vu_choice = (mean @ self.vu_gate.to(x.dtype).T).argmax(dim=-1)
        elif self.vu_choice is None or self.vu_choice.shape[0] != x.shape[0]:
            raise RuntimeError("an SMoLoRA layer saw a decoding step before its prompt")
        if_choice = (instruction.to(x.device, x.dtype) @ self.ins_gate.to(x.dtype).T).argmax(dim=-1)
        return self.vu_choice, if_choice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vu, if_ = self.choices(x)
        one_hot = torch.cat([nn.functional.one_hot(vu, self.half), nn.functional.one_hot(if_, self.half)], dim=-1)
        low = (self.dropout(x) @ self.lora_A.T).unflatten(-1, (2 * self.half, self.expert_rank))
        low = low * one_hot.to(low.dtype)[:, None, :, None]  # [b, t, experts, r_e]: each sample's two experts
        half_rank = self.half * self.expert_rank
        vu_out = low[:, :, :self.half].flatten(-2) @ self.lora_B[:, :half_rank].T * self.scale
        if_out = low[:, :, self.half:].flatten(-2) @ self.lora_B[:, half_rank:].T * self.scale
        attention = torch.softmax(torch.cat([vu_out @ self.lora_fc_A.T, if_out @ self.lora_fc_B.T], dim=-1), dim=-1)
        return attention[..., :1] * vu_out + attention[..., 1:] * if_out
