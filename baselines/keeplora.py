"""KeepLoRA (keeplora; Luo et al., ICLR 2026, "KeepLoRA: Continual Learning with Residual Gradient
Adaptation"; official code MaolinLuo/KeepLoRA, its LLaVA version in MCITlib/KeepLoRA/).

Each layer keeps a protected subspace of its input space: at the start the principal directions of
the pretrained weight (``llava/train/extract_weights.py``), grown after every task by the directions
of that task's gradient that the subspace does not yet explain (``extract_gradients.py``, ``energy``
mode). Each task trains a new LoRA whose A is fixed to the top directions of its gradient with the
protected subspace projected out (``fixed_rank`` mode; ``train.py``'s ``init_lora_from_gradients``
and ``freeze_lora_A``): only B trains, so the update B A has no component on a protected direction
and leaves what the pretrained weight and the earlier tasks use as it was. After a task its LoRA is
merged into the weights, as the official code does (its block kept for the checkpoint).

The gradients are the mean over ``data_ratio`` of the task's training samples (evenly spaced, as
``torch.linspace`` picks them) of each sample's gradient of its mean answer-token loss, formed from
hooks (``methods.gradients``), so the frozen weights, sharded or not, need no gradient of their own.
Subspaces come from the eigenvectors of G^T G (G's left singular vectors in the input space), which
each process sums from its share of G's rows. docs/METHODS.md cites each line and choice.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from mcit_bench.methods.base import (
    Capabilities,
    MethodOptions,
    RunContext,
    Stage,
    register_method,
    rows_of,
    training_batch,
)
from mcit_bench.methods.distributed import processes, row_share, summed_over_processes
from mcit_bench.methods.gradients import answer_nll_each, linear_weight_gradients
from mcit_bench.methods.lora import TaskBlocksMethod
from mcit_bench.methods.search import LR, Choice, Uniform


class KeepLoRAOptions(MethodOptions):
    rank: int = Field(default=16, gt=0)  # seqft's on mcit-tiny (the scripts use 32 on 7B models)
    alpha: float = Field(default=4.0, gt=0)  # alpha / rank = 1/4, the scripts' --lora_alpha $((RANK / 4))
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)  # LLaVA's default: the scripts pass none
    weight_energy: float = Field(default=0.6, gt=0.0, le=1.0)  # train_all.sh: extract_weights.sh ... 0.6
    gradient_energy: float = Field(default=0.99, gt=0.0, le=1.0)  # train_post/task*.json
    data_ratio: float = Field(default=0.2, gt=0.0, le=1.0)  # train_all.sh: extract_gradients.sh ... 0.2
    gradient_batch_size: int = Field(default=8, gt=0)  # samples per backward; the mean is batch 1's
    train_projector: bool = True  # the scripts' --mm_projector_lr


def descending_eigen(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (clamped at 0) and eigenvectors (columns) of a symmetric PSD matrix, largest first."""
    values, vectors = torch.linalg.eigh(gram.double())
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
    # an eigenvector's sign is arbitrary: fix it (largest entry positive), so that runs whose sums
    # differ in the last bits (sharded or not, another machine) choose the same A, not its negative
    largest = vectors.abs().argmax(0, keepdim=True)
    return values, vectors * vectors.gather(0, largest).sign()


def without(space: torch.Tensor | None, gram: torch.Tensor) -> torch.Tensor:
    """The Gram matrix of (I - S^T S) G^T: G's rows with the subspace S (orthonormal rows) removed."""
    if space is None or not len(space):
        return gram.double()
    keep = torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device) - space.double().T @ space.double()
    return keep @ gram.double() @ keep


def weight_space(gram: torch.Tensor, energy: float) -> torch.Tensor:
    """extract_weights.py: the r leading directions with r the count of cumulative energy ratios below
    ``energy`` (at least 1), as rows [r, d_in]."""
    values, vectors = descending_eigen(gram)
    ratio = values / values.sum().clamp_min(torch.finfo(torch.float64).tiny)
    r = max(int((ratio.cumsum(0) < energy).sum()), 1)
    return vectors[:, :r].T.float()


# an eigenvalue this small against the largest is float noise: its direction carries no gradient
NULL_ENERGY = 1e-12


def residual_directions(gram: torch.Tensor, space: torch.Tensor | None, rank: int) -> torch.Tensor:
    """extract_gradients.py, ``fixed_rank``: the ``rank`` leading directions of the gradient with the
    subspace projected out, as rows [rank, d_in], orthogonal to the subspace to float precision.

    Where the gradient has fewer than ``rank`` directions with energy, the rest are arbitrary (the
    official ``svd_lowrank`` returns whatever its random start gives); they are completed the same way
    every time instead: the standard basis, with the subspace and the rows so far projected out."""
    values, vectors = descending_eigen(without(space, gram))
    energetic = int((values > NULL_ENERGY * values[0]).sum()) if values[0] > 0 else 0
    rows = list(vectors[:, : min(rank, energetic)].T)
    taken = [space.double()] if space is not None and len(space) else []
    for candidate in torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device):
        if len(rows) >= rank:
            break
        basis = torch.cat(taken + [torch.stack(rows)] if rows else taken) if taken or rows else None
        if basis is not None:
            candidate = candidate - (candidate @ basis.T) @ basis
        if candidate.norm() > 1e-6:
            rows.append(candidate / candidate.norm())
    while len(rows) < rank:  # the subspace fills the whole input space: nothing is left to train
        rows.append(torch.zeros(gram.shape[0], dtype=torch.float64, device=gram.device))
    return torch.stack(rows).float()


def grown_space(gram: torch.Tensor, space: torch.Tensor, energy: float, out_features: int) -> torch.Tensor:
    """extract_gradients.py, ``energy``: the energy the subspace already explains is
    (total - residual) / total; the residual's leading directions are added one by one while that
    share is below ``energy`` (at most min(d_in, d_out) of them, the SVD's count); the subspace keeps
    at most d_in rows."""
    total = torch.linalg.eigvalsh(gram.double()).clamp_min(0).sum()
    if total <= 0:  # no gradient reached the layer: nothing to protect
        return space
    residual = without(space, gram)
    values, vectors = descending_eigen(residual)
    explained = float((total - values.sum()) / total)
    added = 0
    for value in values[: min(gram.shape[0], out_features)].tolist():
        if explained >= energy:
            break
        explained += value / float(total)
        added += 1
    if not added:
        return space
    grown = torch.cat([space.double(), vectors[:, :added].T], dim=0)
    return grown[: gram.shape[0]].float()


@register_method("keeplora")
class KeepLoRA(TaskBlocksMethod):
    capabilities = Capabilities(grows_params=True)
    Options = KeepLoRAOptions
    folds = True  # scripts/Train_UCIT/Task2.sh, lines 76-80: merge_lora_weights.py after training
    # the rank of each task's LoRA and how much of each task's gradient energy its subspace protects
    search_space = {**LR, "rank": Choice((8, 16, 32)), "gradient_energy": Uniform(0.9, 0.999)}

    def __init__(self, options: KeepLoRAOptions) -> None:
        super().__init__(options)
        self.spaces: dict[str, torch.Tensor] = {}  # per layer, the protected directions [k, d_in]
        self.model: nn.Module | None = None

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        self.model = super().setup(model, run)
        return model

    # ------------------------------------------------------------------ Gram matrices
    def weight_grams(self) -> dict[str, torch.Tensor]:
        """W^T W per layer in float64, summed over the processes' row shares (a sharded weight's local rows):
        in float64 the sum of two shares and the product of the whole agree, so sharded and unsharded
        runs find the same directions."""
        world, rank = processes()
        modules = dict(self.model.named_modules())
        grams = {}
        for name in self.layers:
            weight = modules[name].weight.detach()
            rows = weight.to_local() if hasattr(weight, "to_local") else weight[row_share(weight.shape[0], world, rank)]
            grams[name] = summed_over_processes(rows.double().T @ rows.double())
        return grams

    def gradient_grams(self, stage: Stage, run: RunContext) -> dict[str, torch.Tensor]:
        """G^T G per layer for G the mean per-sample gradient over ``data_ratio`` of the stage's data."""
        data = self.train_data(stage, run)
        count = max(1, int(len(data) * self.options.data_ratio))
        chosen = torch.linspace(0, len(data) - 1, count).long().tolist()
        size = self.options.gradient_batch_size
        batches = (training_batch(run, rows_of(data, chosen[i:i + size])) for i in range(0, count, size))
        was_training = self.model.training
        self.model.eval()  # the official code reads the merged model: no LoRA dropout
        try:
            grads, _ = linear_weight_gradients(self.model, list(self.layers), batches,
                                               lambda batch, outputs: answer_nll_each(batch, outputs).sum())
        finally:
            self.model.zero_grad(set_to_none=True)
            self.model.train(was_training)
        grams = {}
        for name, layer in self.layers.items():
            rows = grads.get(name, torch.zeros(0, layer.d_in, device=run.device)).double() / count
            grams[name] = summed_over_processes(rows.T @ rows)
        return grams

    # ------------------------------------------------------------------ hooks
    def before_task(self, stage: Stage, run: RunContext) -> None:
        task = stage.index - 1
        if not self.spaces:
            self.spaces = {name: weight_space(gram, self.options.weight_energy)
                           for name, gram in self.weight_grams().items()}
        if self.blocks.count <= task:
            grams = self.gradient_grams(stage, run)
            self.blocks.grow(task + 1, run.seed)  # each new A is set next
            for name, layer in self.layers.items():
                with torch.no_grad():
                    layer.lora_A[task].copy_(residual_directions(grams[name], self.spaces[name], layer.rank))
        self.blocks.start(task, run.seed, down=False)

    def after_task(self, stage: Stage, run: RunContext) -> None:
        grams = self.gradient_grams(stage, run)
        self.spaces = {name: grown_space(grams[name], self.spaces[name], self.options.gradient_energy,
                                         layer.d_out)
                       for name, layer in self.layers.items()}
        super().after_task(stage, run)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The protected subspaces and every block's fixed A (never trained, so not among the weights
        the checkpoint keeps)."""
        state: dict[str, Any] = super().state_dict()
        for name, layer in self.layers.items():
            state[f"space.{name}"] = self.spaces[name]
            for index, down in enumerate(layer.lora_A):
                state[f"down.{index}.{name}"] = down.detach()
        return state

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        device = next(model.parameters()).device
        super().load_state_dict(state, model)
        for name, layer in self.layers.items():
            self.spaces[name] = state[f"space.{name}"].to(device)
            with torch.no_grad():
                for index, down in enumerate(layer.lora_A):
                    down.copy_(state[f"down.{index}.{name}"])
