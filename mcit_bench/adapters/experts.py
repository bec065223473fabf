"""LoRA-variant layers (MoELoRA, BranchLoRA, D-MoLE experts, O-LoRA blocks) and the one helper that attaches them.

An adapter is attached to an ``nn.Linear`` of any Hugging Face model as a child module plus a forward
hook that adds its output, so parameter names, the model class and ``generate`` stay those of the
base model (``...q_proj.weight`` is still the frozen base weight; the adapter's live under
``...q_proj.adapter``).

Experts are always computed together: their down-projections are stacked into one matrix, the
per-expert gates scale the stacked low-rank activations, and one matmul with the stacked
up-projections sums them. There is no Python loop over experts in a forward pass.

Routing that depends on the task (BranchLoRA's routers, D-MoLE's active experts) reads one shared
:class:`Routing` object per model: a tensor of per-sample task indices at evaluation, chosen by the
method's selector without labels, so a batch of mixed tasks stays one batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from mcit_bench.core.errors import ConfigError
from mcit_bench.models.blank_image import vision_sees_blank


class Routing:
    """Per-sample task choice shared by every adapter layer of one model."""

    def __init__(self) -> None:
        self.training_task = 0  # the task being trained: every training sample routes to it
        self.task_ids: torch.Tensor | None = None  # set per evaluation batch by the method's selector
        self.enabled = True  # False: adapters add nothing (the frozen base model, e.g. for embeddings)
        # D-MoLE in training: per sample a past task whose experts join the training task's (-1: none)
        self.past_ids: torch.Tensor | None = None
        # vision encoders that flatten every image's patches into one axis (Qwen2-VL): for each such
        # row count, the sample each row belongs to
        self.row_samples: dict[int, torch.Tensor] = {}
        # in training, [samples, tokens]: True on the tokens that count (not padding) for usage statistics
        self.token_mask: torch.Tensor | None = None
        # counts the training micro-batches (the method's before_step), so usage is counted once per
        # micro-batch however often activation recomputation runs a layer's forward
        self.micro_batch = 0

    def per_row(self, per_sample: torch.Tensor, rows: int, device: torch.device) -> torch.Tensor:
        """``per_sample`` values spread over a layer input whose first axis has ``rows`` entries."""
        if rows in self.row_samples:
            return per_sample.to(device)[self.row_samples[rows].to(device)]
        if per_sample.shape[0] != rows and vision_sees_blank():  # rows of the blank image, weighted zero
            return torch.full((rows,), self.training_task, dtype=torch.long, device=device)
        if per_sample.shape[0] != rows:
            # a silent fallback would route a whole batch to the training task and hide the bug
            raise RuntimeError(f"routing holds {per_sample.shape[0]} task ids but an adapter layer sees a "
                               f"first axis of {rows}; it is neither the sample axis nor a known patch axis")
        return per_sample.to(device)

    def ids(self, rows: int, device: torch.device) -> torch.Tensor:
        if self.task_ids is None:
            return torch.full((rows,), self.training_task, dtype=torch.long, device=device)
        return self.per_row(self.task_ids, rows, device)


def _add_adapter_output(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    return output + module.adapter(inputs[0]).to(output.dtype)


def attach_adapters(model: nn.Module, target_names: Iterable[str],
                    build: Callable[[str, nn.Linear], nn.Module]) -> dict[str, nn.Module]:
    """Attach ``build(name, linear)`` to each named ``nn.Linear``; returns the adapters by module name."""
    modules = dict(model.named_modules())
    attached: dict[str, nn.Module] = {}
    for name in target_names:
        linear = modules.get(name)
        if not isinstance(linear, nn.Linear):
            raise ConfigError(f"target module {name!r} is not a linear layer of this model; "
                              f"choose target modules among its nn.Linear layers")
        if hasattr(linear, "adapter"):
            raise ConfigError(f"module {name!r} already carries an adapter; attach one method's adapters only")
        adapter = build(name, linear).to(device=linear.weight.device)
        linear.add_module("adapter", adapter)
        linear.register_forward_hook(_add_adapter_output)
        attached[name] = adapter
    return attached


def kaiming_down(rank: int, d_in: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A LoRA down-projection as peft initialises it: Kaiming-uniform(a=sqrt(5)), bound 1/sqrt(d_in).

    seqft, BranchLoRA, D-MoLE and O-LoRA start their A this way; MoELoRA follows CoIN's N(0, 0.01^2).
    """
    bound = 1 / math.sqrt(d_in)
    return torch.empty(rank, d_in).uniform_(-bound, bound, generator=generator)


def _check_rank(rank: int, experts: int) -> int:
    if rank <= 0 or experts <= 0 or rank % experts:
        raise ConfigError(f"rank {rank} must be a positive multiple of the number of experts {experts}")
    return rank // experts


class MoELoRA(nn.Module):
    """CoIN's MoELoRA (``CoIN/peft/tuners/coinmoelora.py``): E experts split rank r; a dense token-level
    softmax router, no top-k.

    h = W0 x + (alpha / r) * sum_e softmax(W_g x)_e B_e A_e dropout(x), each expert's A drawn from
    N(0, 0.01^2) and B = 0 (lines 290-294), the router an ``nn.Linear`` without bias at its default
    initialisation reading x without dropout (lines 320-321, 386-395). CL-MoE's layer is the same module.
    """

    def __init__(self, d_in: int, d_out: int, experts: int, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.experts, self.expert_rank = experts, _check_rank(rank, experts)
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.lora_A = nn.Parameter(torch.randn(rank, d_in) * 0.01)  # expert e: rows e*r_e .. (e+1)*r_e
        self.lora_B = nn.Parameter(torch.zeros(d_out, rank))
        self.router = nn.Parameter(torch.empty(experts, d_in))
        nn.init.kaiming_uniform_(self.router, a=math.sqrt(5))  # nn.Linear's default

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x @ self.router.T, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = (self.dropout(x) @ self.lora_A.T).unflatten(-1, (self.experts, self.expert_rank))
        low = low * self.gates(x).unsqueeze(-1)
        return (low.flatten(-2) @ self.lora_B.T) * self.scale


def top_k_gates(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Softmax over the allowed branches, then keep the k largest and renormalise them to sum to 1."""
    probs = torch.softmax(logits, dim=-1)
    values, indices = probs.topk(k, dim=-1)
    values = values / values.sum(dim=-1, keepdim=True).clamp_min(1e-9)
    return torch.zeros_like(probs).scatter(-1, indices, values)


class BranchLoRA(nn.Module):
    """BranchLoRA: one shared down-projection (the trunk), N up-projections (branches), a router per task.

    h = W0 x + (alpha / r) * sum_{e in topk} g_e B_e (A x). Branches and routers are one parameter
    each, so a branch or an old router is frozen by turning its gradient off; the layer stacks
    them for the batched forward. ``usage`` accumulates the gate mass of the training task's
    router over the tokens that count (``Routing.token_mask``: padding excluded), which decides what
    freezes after the task.
    """

    def __init__(self, d_in: int, d_out: int, branches: int, rank: int, alpha: float, top_k: int,
                 routing: Routing) -> None:
        super().__init__()
        self.d_in, self.d_out, self.rank, self.top_k = d_in, d_out, rank, top_k
        self.scale = alpha / rank
        self.routing = routing
        self.lora_A = nn.Parameter(kaiming_down(rank, d_in))
        self.branches = nn.ParameterList([nn.Parameter(torch.zeros(d_out, rank)) for _ in range(branches)])
        self.routers = nn.ParameterList()
        self.register_buffer("usage", torch.zeros(branches), persistent=False)
        self.counted_pass = -1  # the micro-batch (Routing.micro_batch) whose usage was counted last

    @property
    def n_branches(self) -> int:
        return len(self.branches)

    def add_branch(self) -> None:
        self.branches.append(nn.Parameter(torch.zeros(self.d_out, self.rank, device=self.lora_A.device)))
        self.usage = torch.cat([self.usage, self.usage.new_zeros(1)])

    def add_router(self, generator: torch.Generator, width: int | None = None) -> None:
        """A router over the branches that exist now (or ``width`` of them, when restoring a run)."""
        weight = torch.randn(width or self.n_branches, self.d_in, generator=generator) * 0.01
        self.routers.append(nn.Parameter(weight.to(self.lora_A.device)))

    def stacked_routers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every router padded to the current branch count, and the mask of branches each may use."""
        n = self.n_branches
        weights = torch.stack([F.pad(r, (0, 0, 0, n - r.shape[0])) for r in self.routers])
        allowed = torch.stack([torch.arange(n, device=weights.device) < r.shape[0] for r in self.routers])
        return weights, allowed

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        """[..., n_branches] logits, -inf on branches a sample's router was not made with."""
        n = self.n_branches
        if self.routing.task_ids is None:
            # one task for the whole batch (training): one matmul, no per-sample gather of routers
            router = self.routers[self.routing.training_task]
            return F.pad(x @ router.T, (0, n - router.shape[0]), value=float("-inf"))
        weights, allowed = self.stacked_routers()
        ids = self.routing.ids(x.shape[0], x.device)
        logits = torch.einsum("btd,bnd->btn", x, weights[ids])
        return logits.masked_fill(~allowed[ids].unsqueeze(1), float("-inf"))

    def counted(self, gates: torch.Tensor) -> torch.Tensor:
        """``gates`` [samples, tokens, branches] with the tokens that do not count (padding) zeroed."""
        mask = self.routing.token_mask
        if mask is None:
            return gates
        if mask.shape != gates.shape[:2]:
            raise RuntimeError(f"the token mask is {tuple(mask.shape)} but a BranchLoRA layer sees "
                               f"{tuple(gates.shape[:2])} (samples, tokens); the mask must follow the layer input")
        return gates * mask.to(gates.device, gates.dtype).unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.routing.enabled or not len(self.routers):  # no task yet: the base model
            return x.new_zeros(*x.shape[:-1], self.d_out)
        gates = top_k_gates(self.router_logits(x), self.top_k)
        if self.training and self.counted_pass != self.routing.micro_batch:
            # once per micro-batch: gradient checkpointing runs this forward again in backward
            self.counted_pass = self.routing.micro_batch
            self.usage += self.counted(gates.detach()).sum(dim=(0, 1))
        low = (x @ self.lora_A.T).unsqueeze(-2) * gates.unsqueeze(-1)  # [b, t, n, r]
        up = torch.stack(list(self.branches), dim=1).flatten(1)  # [d_out, n * r]
        return (low.flatten(-2) @ up.T) * self.scale


class TaskExperts(nn.Module):
    """D-MoLE's per-task LoRA experts at one module; a sample sums the experts of its active tasks.

    Experts are added as tasks allocate this module (``owners`` says which task each expert
    belongs to). At evaluation each sample's active set is the task its router chose; in training
    it is the task being trained.
    """

    def __init__(self, d_in: int, d_out: int, rank: int, alpha: float, routing: Routing) -> None:
        super().__init__()
        self.d_in, self.d_out, self.rank = d_in, d_out, rank
        self.scale = alpha / rank
        self.routing = routing
        self.lora_A = nn.ParameterList()
        self.lora_B = nn.ParameterList()
        self.owners: list[int] = []
        # the owners on the experts' device, so a forward copies nothing from the host
        self.register_buffer("owner_ids", torch.zeros(0, dtype=torch.long), persistent=False)

    def add_expert(self, task: int, generator: torch.Generator, device: torch.device) -> None:
        self.lora_A.append(nn.Parameter(kaiming_down(self.rank, self.d_in, generator).to(device)))
        self.lora_B.append(nn.Parameter(torch.zeros(self.d_out, self.rank, device=device)))
        self.owners.append(task)
        self.owner_ids = torch.tensor(self.owners, dtype=torch.long, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.owners or not self.routing.enabled:
            return x.new_zeros(*x.shape[:-1], self.d_out)
        ids = self.routing.ids(x.shape[0], x.device)
        owners = self.owner_ids
        active = ids.unsqueeze(1) == owners.unsqueeze(0)  # [b, experts]
        if self.routing.past_ids is not None:  # a past task the router picked for this training sample
            past = self.routing.per_row(self.routing.past_ids, x.shape[0], x.device)
            active |= past.unsqueeze(1) == owners.unsqueeze(0)
        active = active.to(x.dtype)
        down = torch.cat(list(self.lora_A), dim=0)  # [experts * r, d_in]
        up = torch.cat(list(self.lora_B), dim=1)  # [d_out, experts * r]
        low = (x @ down.T).unflatten(-1, (len(self.owners), self.rank))
        mask = active.view(active.shape[0], *([1] * (low.dim() - 3)), active.shape[1], 1)
        return ((low * mask).flatten(-2) @ up.T) * self.scale


class TaskBlocksLoRA(nn.Module):
    """O-LoRA's layer: one LoRA block (A_t, B_t) per task, every block active in the forward.

    h = W0 x + (alpha / r) * sum_t B_t A_t dropout(x), one scale for every block and the dropout on the
    input shared by all (O-LoRA's src/peft/tuners/lora.py, lines 583-597: lora_A/B hold the earlier
    tasks' blocks concatenated, loranew_A/B the current one). The blocks are concatenated for one
    matmul each way; which blocks train is the method's choice (their ``requires_grad``).
    """

    def __init__(self, d_in: int, d_out: int, rank: int, alpha: float, dropout: float,
                 down_std: float | None = None) -> None:
        super().__init__()
        self.d_in, self.d_out, self.rank = d_in, d_out, rank
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.down_std = down_std  # None: A Kaiming-uniform (PEFT's); else A ~ N(0, down_std^2) (CoIN's MoELoRA)
        self.lora_A = nn.ParameterList()
        self.lora_B = nn.ParameterList()
        # each sample's weight of each block ([batch, blocks], a row broadcasting to every sample); None:
        # every block at weight one (O-LoRA's sum). DISCO sets it: one-hot in training, its mixture in routing
        self.block_weights: torch.Tensor | None = None
        # HiDe-LLaVA's task-general fusion: (sum_k B_k)(sum_k A_k) x, cross terms included (when no weights)
        self.fused = False
        # the leading blocks already added into the adapted layer's weight (fold_into): the forward skips them
        self.folded = 0

    @property
    def n_blocks(self) -> int:
        return len(self.lora_A)

    def add_block(self, generator: torch.Generator, device: torch.device) -> None:
        """A new task's block: A Kaiming-uniform (lora.py, lines 504-506) or normal, B = 0."""
        if self.down_std is None:
            down = kaiming_down(self.rank, self.d_in, generator)
        else:
            down = torch.randn(self.rank, self.d_in, generator=generator) * self.down_std
        self.lora_A.append(nn.Parameter(down.to(device)))
        self.lora_B.append(nn.Parameter(torch.zeros(self.d_out, self.rank, device=device)))

    @torch.no_grad()
    def fold_into(self, weight: torch.Tensor) -> None:
        """Add the next unfolded block's update, scale * B A, into ``weight`` (the adapted layer's, a
        row-sharded DTensor under ``--shard fsdp``), as the official RegLoRA and KeepLoRA merge each
        task's LoRA before the next; the forward then skips the block, so a stream's later tasks cost
        what its first did. The product is taken in float32; repeating the folds in order on the
        pristine weight gives it again bit for bit (a resumed run's checkpoint holds the blocks)."""
        block = self.folded
        update = (self.lora_B[block].float() @ self.lora_A[block].float() * self.scale).to(weight.dtype)
        if hasattr(weight, "device_mesh"):
            from torch.distributed.tensor import distribute_tensor

            update = distribute_tensor(update, weight.device_mesh, weight.placements)
        weight.add_(update)
        self.folded += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded == self.n_blocks:
            return x.new_zeros(*x.shape[:-1], self.d_out)
        if self.fused and self.block_weights is None:
            return (self.dropout(x) @ sum(self.lora_A).T) @ sum(self.lora_B).T * self.scale
        down = torch.cat(list(self.lora_A[self.folded:]), dim=0)  # [blocks * r, d_in]
        up = torch.cat(list(self.lora_B[self.folded:]), dim=1)  # [d_out, blocks * r]
        hidden = self.dropout(x) @ down.T
        if self.block_weights is not None:  # sum_k w_k B_k A_k x: each block's slice scaled by its weight
            weights = self.block_weights.to(hidden.dtype).repeat_interleave(self.rank, dim=-1)
            hidden = hidden * weights.view(weights.shape[0], *([1] * (hidden.dim() - 2)), weights.shape[-1])
        return hidden @ up.T * self.scale
