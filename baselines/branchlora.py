"""BranchLoRA (branchlora; Zhang et al., ACL 2025): a shared trunk, branches, task routers, freezing.

Every linear layer of the language model gets one shared down-projection A (the trunk) and N
up-projections B_1..B_N (the branches): h = W0 x + (alpha / r) * sum_{e in topk(g)} g_e B_e (A x).

- Task-specific routers: each task adds a router (d -> N, softmax, top-k, renormalised over the k);
  older routers are frozen.
- Tuning-freezing: after a task, in every layer the ``freeze_per_task`` tunable branches its router
  used most (summed gate mass over its training tokens, padding excluded) are frozen. Later tasks
  may still route through frozen branches (read only). The paper does not publish what happens
  when too few tunable branches are left; ``on_exhausted: share`` (default) lets tasks keep
  training what is left, so the parameter budget stays that of MoELoRA's experts; ``grow`` adds
  zero-initialised branches until ``top_k`` are tunable (a budget that grows with the stream).
- Like for like with MoELoRA by default: as many branches as MoELoRA has experts (8, CoIN's), each
  of MoELoRA's per-expert rank (2), so both hold up-projections of total rank 16 at the same scale
  alpha / r = 2, as the paper pairs them (8 branches of rank 16 against 8 experts of 128 / 8); the
  trunk's A and MoELoRA's A start from the same Kaiming-uniform draw rule. One branch freezes per
  task, so each of the 8 tasks of CoIN (and of synth-coin) finds at least one tunable branch.
- Task selector: per task an image key and an instruction key (mcit_bench.methods.selector); at
  evaluation each sample takes the router of the task whose keys match best, without its label.
- The trunk and the projector are shared and keep training, as in the paper.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from mcit_bench.adapters.experts import BranchLoRA, Routing, attach_adapters
from mcit_bench.adapters.lora import freeze_all, language_linear_names, unfreeze_projector
from mcit_bench.methods.base import Capabilities, Method, MethodOptions, RunContext, Stage, register_method
from mcit_bench.methods.distributed import summed_over_processes
from mcit_bench.methods.search import LR, Choice
from mcit_bench.methods.selector import KeySelector
from mcit_bench.models.anatomy import image_feature_dim


class BranchLoRAOptions(MethodOptions):
    branches: int = Field(default=8, gt=0)  # MoELoRA's experts
    # the rank of the trunk and of every branch: the paper pairs it with MoELoRA's per-expert rank
    # (16 = 128 / 8 on 7B models); here MoELoRA's 16 / 8 experts
    rank: int = Field(default=2, gt=0)
    alpha: float = Field(default=4.0, gt=0)  # alpha / rank = 2, MoELoRA's 32 / 16
    top_k: int = Field(default=2, gt=0)
    freeze_per_task: int | None = Field(default=1, ge=0)  # None: top_k
    on_exhausted: Literal["grow", "share"] = "share"
    key_weight: float = Field(default=1.0, ge=0.0)
    train_projector: bool = True

    @model_validator(mode="after")
    def _top_k_fits(self) -> "BranchLoRAOptions":
        if self.top_k > self.branches:
            raise ValueError(f"top_k {self.top_k} is above the number of branches {self.branches}")
        return self


@register_method("branchlora")
class BranchLoRAMethod(Method):
    capabilities = Capabilities(grows_params=True, selects_task=True)
    Options = BranchLoRAOptions
    # the rank of the trunk and of every branch
    search_space = {**LR, "rank": Choice((2, 4, 8))}

    def __init__(self, options: BranchLoRAOptions) -> None:
        super().__init__(options)
        self.routing = Routing()
        self.layers: dict[str, BranchLoRA] = {}
        self.selector: KeySelector | None = None
        self.model: nn.Module | None = None
        self.frozen: dict[str, list[int]] = {}
        self.step_samples: list[dict[str, Any]] | None = None  # the training micro-batch's rows

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        freeze_all(model)
        o = self.options
        self.layers = attach_adapters(
            model, language_linear_names(model),
            lambda name, linear: BranchLoRA(linear.in_features, linear.out_features, o.branches, o.rank, o.alpha,
                                            o.top_k, self.routing))
        self.frozen = {name: [] for name in self.layers}
        self.selector = KeySelector(image_feature_dim(model), model.get_input_embeddings().embedding_dim)
        model.add_module("task_selector", self.selector)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name.endswith("lora_A") or ".branches." in name)
        if o.train_projector:
            unfreeze_projector(model)
        self.model = model
        return model

    def before_task(self, stage: Stage, run: RunContext) -> None:
        task = stage.index - 1
        generator = torch.Generator().manual_seed(run.seed * 1000 + task)
        device = next(self.model.parameters()).device
        while self.selector.n_tasks <= task:
            for layer in self.layers.values():
                layer.add_router(generator)
            self.selector.add_task(device)
        for name, layer in self.layers.items():
            for index, router in enumerate(layer.routers):
                router.requires_grad_(index == task)
            layer.usage.zero_()
            self.apply_freezing(name, layer)
        for index in range(self.selector.n_tasks):
            self.selector.image_keys[index].requires_grad_(index == task)
            self.selector.text_keys[index].requires_grad_(index == task)
        self.routing.training_task, self.routing.task_ids = task, None

    def apply_freezing(self, name: str, layer: BranchLoRA) -> None:
        for index, branch in enumerate(layer.branches):
            branch.requires_grad_(index not in self.frozen[name])

    def before_step(self, batch: dict[str, torch.Tensor], run: RunContext,
                    samples: list[dict[str, Any]] | None = None) -> None:
        self.routing.token_mask = batch["attention_mask"].bool()  # usage counts no padding
        self.routing.micro_batch += 1
        self.step_samples = samples

    def loss(self, batch: dict[str, torch.Tensor], outputs: Any, run: RunContext) -> dict[str, torch.Tensor]:
        queries = self.selector.queries(self.model, batch, self.step_samples)
        return {"keys": self.options.key_weight * self.selector.key_loss(queries, self.routing.training_task)}

    def after_task(self, stage: Stage, run: RunContext) -> None:
        budget = self.options.top_k if self.options.freeze_per_task is None else self.options.freeze_per_task
        for name, layer in self.layers.items():
            # each process counted its share of the batches: freeze what they used together
            order = torch.argsort(summed_over_processes(layer.usage), descending=True, stable=True).tolist()
            tunable = [i for i in order if i not in self.frozen[name]]
            self.frozen[name] = sorted(self.frozen[name] + tunable[:budget])
            if self.options.on_exhausted == "grow":
                while layer.n_branches - len(self.frozen[name]) < self.options.top_k:
                    layer.add_branch()
            self.apply_freezing(name, layer)

    def routes_by_choice_alone(self) -> bool:
        return True

    def route(self, batch: dict[str, torch.Tensor], run: RunContext, oracle: torch.Tensor | None = None,
              samples: list[dict[str, Any]] | None = None) -> torch.Tensor | None:
        if self.selector.n_tasks == 0:
            return None
        chosen = self.selector.choose(self.model, batch, samples) if oracle is None else oracle.to(run.device)
        self.routing.task_ids, self.routing.token_mask = chosen, None
        return chosen

    def state_dict(self) -> dict[str, Any]:
        return {"frozen": self.frozen, "branches": {name: layer.n_branches for name, layer in self.layers.items()},
                "router_widths": {name: [r.shape[0] for r in layer.routers] for name, layer in self.layers.items()},
                "tasks": self.selector.n_tasks}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        generator = torch.Generator().manual_seed(0)  # shapes only: the weights are loaded next
        device = next(model.parameters()).device
        for name, layer in self.layers.items():
            while layer.n_branches < state["branches"][name]:
                layer.add_branch()
            for width in state["router_widths"][name][len(layer.routers):]:
                layer.add_router(generator, width)
        while self.selector.n_tasks < state["tasks"]:
            self.selector.add_task(device)
        self.frozen = {name: list(indices) for name, indices in state["frozen"].items()}
