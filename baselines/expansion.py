"""Model expansion (expansion; EProj of He et al. 2023): one projector per task, chosen by keys.

Each task adds a copy of the base vision-language projector; only that copy and the task's keys
train, everything else (vision tower, language model, older projectors) stays frozen. At
evaluation each sample picks the projector of the task whose image and instruction keys match it
best (mcit_bench.methods.selector), without its label; before any task the base projector serves.
The projectors of one batch are applied together from stacked weights, per sample.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from pydantic import Field
from torch import nn

from mcit_bench.adapters.experts import Routing
from mcit_bench.adapters.lora import freeze_all
from mcit_bench.errors import ConfigError
from mcit_bench.methods.base import Capabilities, Method, MethodOptions, RunContext, Stage, register_method
from mcit_bench.methods.selector import KeySelector, sample_queries
from mcit_bench.models.loading import projector, vision_tower


class ExpansionOptions(MethodOptions):
    # the projector is all that trains here, so it takes the adapters' rate, not the run's projector_lr
    lr: float = Field(default=1e-3, gt=0)
    key_weight: float = Field(default=1.0, ge=0.0)


class ProjectorBank(nn.Module):
    """The base projector plus one trainable copy per task; each sample goes through its task's copy."""

    def __init__(self, base: nn.Module, routing: Routing) -> None:
        super().__init__()
        if not all(hasattr(base, part) for part in ("linear_1", "act", "linear_2")):
            raise ConfigError(f"expansion needs a LLaVA-style two-layer projector; {type(base).__name__} is not one")
        self.base = base
        self.tasks = nn.ModuleList()
        self.routing = routing

    def add_task(self) -> None:
        self.tasks.append(copy.deepcopy(self.base))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not len(self.tasks):
            return self.base(features)
        ids = self.routing.ids(features.shape[0], features.device)
        w1 = torch.stack([p.linear_1.weight for p in self.tasks])[ids]
        b1 = torch.stack([p.linear_1.bias for p in self.tasks])[ids]
        w2 = torch.stack([p.linear_2.weight for p in self.tasks])[ids]
        b2 = torch.stack([p.linear_2.bias for p in self.tasks])[ids]
        hidden = self.base.act(torch.einsum("bnd,bhd->bnh", features, w1) + b1.unsqueeze(1))
        return torch.einsum("bnh,boh->bno", hidden, w2) + b2.unsqueeze(1)


def replace_projector(model: nn.Module, bank: nn.Module) -> None:
    old = projector(model)
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            if child is old:
                setattr(module, child_name, bank)
                return


@register_method("expansion")
class Expansion(Method):
    capabilities = Capabilities(grows_params=True)
    Options = ExpansionOptions

    def __init__(self, options: ExpansionOptions) -> None:
        super().__init__(options)
        self.routing = Routing()
        self.bank: ProjectorBank | None = None
        self.selector: KeySelector | None = None
        self.model: nn.Module | None = None

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        freeze_all(model)
        if isinstance(model.config.vision_feature_layer, list):
            raise ConfigError("expansion supports a single vision feature layer")
        self.bank = ProjectorBank(projector(model), self.routing)
        replace_projector(model, self.bank)
        self.selector = KeySelector(vision_tower(model).config.hidden_size, model.get_input_embeddings().embedding_dim)
        model.add_module("task_selector", self.selector)
        self.model = model
        return model

    def before_task(self, stage: Stage, run: RunContext) -> None:
        task = stage.index - 1
        device = next(self.model.parameters()).device
        while len(self.bank.tasks) <= task:
            self.bank.add_task()
            self.bank.tasks[-1].to(device)
            self.selector.add_task(device)
        freeze_all(self.model)
        for parameter in self.bank.tasks[task].parameters():
            parameter.requires_grad_(True)
        self.selector.image_keys[task].requires_grad_(True)
        self.selector.text_keys[task].requires_grad_(True)
        self.routing.training_task, self.routing.task_ids = task, None

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": self.options.lr}]

    def loss(self, batch: dict[str, torch.Tensor], outputs: Any, run: RunContext) -> dict[str, torch.Tensor]:
        queries = sample_queries(self.model, batch)
        return {"keys": self.options.key_weight * self.selector.key_loss(queries, self.routing.training_task)}

    def route(self, batch: dict[str, torch.Tensor], run: RunContext) -> torch.Tensor | None:
        if self.selector.n_tasks == 0:
            return None
        self.routing.task_ids = self.selector.select(sample_queries(self.model, batch))
        return self.routing.task_ids

    def state_dict(self) -> dict[str, Any]:
        return {"tasks": len(self.bank.tasks)}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        device = next(model.parameters()).device
        while len(self.bank.tasks) < state["tasks"]:
            self.bank.add_task()
            self.bank.tasks[-1].to(device)
            self.selector.add_task(device)
