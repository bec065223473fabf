"""The LoRA machinery several plugins share: seqft's options, search space and trainable set (seqft,
EWC, LwF, replay, joint) and a LoRA block per task (O-LoRA, KeepLoRA, RegLoRA). It lives here, not in
a plugin, so no plugin imports another."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from mcit_bench.adapters.experts import TaskBlocksLoRA, attach_adapters
from mcit_bench.adapters.lora import freeze_all, inject_lora, language_linear_names, unfreeze_projector
from mcit_bench.methods.base import Method, MethodOptions, RunContext, Stage
from mcit_bench.methods.search import LR, Choice, SearchSpace
from mcit_bench.models.anatomy import language_model


class SeqFTOptions(MethodOptions):
    flags: ClassVar[tuple[str, ...]] = ("full",)
    full: bool = False  # train all language-model weights instead of LoRA
    lora_rank: int = Field(default=16, gt=0)
    lora_alpha: float = Field(default=32.0, gt=0)
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    train_projector: bool = True

    def trains_base_weights(self) -> bool:
        return self.full


# the LoRA methods' common space: learning rate and rank (lora_alpha stays fixed, as CoIN fixes it)
LORA_SPACE: SearchSpace = {**LR, "lora_rank": Choice((8, 16, 32))}


def lora_or_full(model: nn.Module, options: SeqFTOptions) -> nn.Module:
    """The default trainable set of METHODS.md: LoRA (or every LM weight) plus the projector."""
    if options.full:
        freeze_all(model)
        for parameter in language_model(model).parameters():
            parameter.requires_grad_(True)
    else:
        model = inject_lora(model, options.lora_rank, options.lora_alpha, options.lora_dropout)
    if options.train_projector:
        unfreeze_projector(model)
    return model


class TaskBlocks:
    """A LoRA block per task on every linear layer of the language model, the earlier tasks' blocks
    frozen and active: kept beside the new one (O-LoRA's code) or folded into the layer's weight after
    their task (:meth:`fold`, RegLoRA's and KeepLoRA's code merge each task's LoRA), the same sum."""

    def __init__(self, model: nn.Module, rank: int, alpha: float, dropout: float, train_projector: bool,
                 down_std: float | None = None) -> None:
        """Freeze ``model``, attach the (empty) block layers and, if asked, let the projector train."""
        freeze_all(model)
        self.model = model
        self.layers: dict[str, TaskBlocksLoRA] = attach_adapters(
            model, language_linear_names(model),
            lambda name, linear: TaskBlocksLoRA(linear.in_features, linear.out_features, rank, alpha, dropout,
                                                down_std))
        if train_projector:
            unfreeze_projector(model)

    @property
    def count(self) -> int:
        return next(iter(self.layers.values())).n_blocks

    def grow(self, blocks: int, seed: int) -> None:
        """Add blocks until each layer holds ``blocks``; block b is drawn from one generator seeded by b."""
        device = next(self.model.parameters()).device
        for block in range(self.count, blocks):
            generator = torch.Generator().manual_seed(seed * 1000 + block)
            for layer in self.layers.values():
                layer.add_block(generator, device)

    def start(self, task: int, seed: int, down: bool = True) -> None:
        """Before ``task`` (0-based) trains: its block exists and is the only one that trains."""
        self.grow(task + 1, seed)
        self.train_only(task, down)

    @property
    def folded(self) -> int:
        return next(iter(self.layers.values())).folded

    def fold(self, blocks: int) -> None:
        """Fold blocks into the adapted layers' weights, in order, until ``blocks`` are."""
        modules = dict(self.model.named_modules())
        for _ in range(self.folded, blocks):
            for name, layer in self.layers.items():
                layer.fold_into(modules[name].weight)

    def train_only(self, task: int, down: bool = True) -> None:
        """Only block ``task`` trains (its A too unless ``down`` is False); every other block is frozen."""
        for layer in self.layers.values():
            for index in range(layer.n_blocks):
                layer.lora_A[index].requires_grad_(down and index == task)
                layer.lora_B[index].requires_grad_(index == task)


class TaskBlocksMethod(Method):
    """A method with a LoRA block per task (O-LoRA, RegLoRA, KeepLoRA): its options carry ``rank``,
    ``alpha``, ``dropout`` and ``train_projector``; before each task its block is added and alone trains,
    and after it, where ``folds`` says so, the block is folded into the weights it adapts."""

    # does the official code merge each task's LoRA into the model before the next task?
    folds: ClassVar[bool] = False

    def __init__(self, options: MethodOptions) -> None:
        super().__init__(options)
        self.blocks: TaskBlocks | None = None
        self.layers: dict[str, TaskBlocksLoRA] = {}
        self.task = 0
        self.to_fold = 0  # the folds a loaded checkpoint's weights had

    # None: each block's A Kaiming-uniform (PEFT's); a number: A ~ N(0, std^2)
    down_std: ClassVar[float | None] = None

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        o = self.options
        self.blocks = TaskBlocks(model, o.rank, o.alpha, o.dropout, o.train_projector, self.down_std)
        self.layers = self.blocks.layers
        return model

    def before_task(self, stage: Stage, run: RunContext) -> None:
        self.task = stage.index - 1
        self.blocks.start(self.task, run.seed)

    def after_task(self, stage: Stage, run: RunContext) -> None:
        if self.folds:
            self.blocks.fold(self.task + 1)

    def state_dict(self) -> dict[str, Any]:
        return {"blocks": self.blocks.count, "folded": self.blocks.folded}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        self.blocks.grow(int(state["blocks"]), 0)  # shapes only: the weights are loaded next
        self.to_fold = int(state.get("folded", 0))

    def after_load(self, model: nn.Module) -> None:
        """The folds again, in their order, on the pristine weights the run started from."""
        self.blocks.fold(self.to_fold)
