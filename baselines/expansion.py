"""Model expansion (expansion; EProj of He et al. 2023): one projector per task, chosen by keys.

Each task adds a copy of the base vision-language projector; only that copy and the task's keys
train, everything else (vision tower, language model, older projectors) stays frozen. At
evaluation each sample picks the projector of the task whose image and instruction keys match it
best (mcit_bench.methods.selector), without its label; before any task the base projector serves.
The projectors of one batch are applied together (vmap over stacked weights), per sample.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from pydantic import Field
from torch import nn

from mcit_bench.adapters.experts import Routing
from mcit_bench.adapters.lora import freeze_all
from mcit_bench.core.errors import ConfigError
from mcit_bench.methods.base import Capabilities, Method, MethodOptions, RunContext, Stage, register_method
from mcit_bench.methods.search import LogUniform
from mcit_bench.methods.selector import KeySelector
from mcit_bench.models.anatomy import image_feature_dim, image_row_samples, projector


class ExpansionOptions(MethodOptions):
    # the projector is all that trains here, so it takes the adapters' rate, not the run's projector_lr
    lr: float = Field(default=1e-3, gt=0)
    key_weight: float = Field(default=1.0, ge=0.0)


class ProjectorBank(nn.Module):
    """The base projector plus one trainable copy per task; each sample goes through its task's copy.

    In training every sample belongs to the task being trained, so only its copy runs. At evaluation
    the copies run together (vmap over their stacked weights) and each sample, or each image row of
    a vision encoder that flattens its images (Qwen2-VL), takes its own task's output.
    """

    def __init__(self, base: nn.Module, routing: Routing) -> None:
        super().__init__()
        self.base = base
        self.tasks = nn.ModuleList()
        self.routing = routing

    def add_task(self) -> None:
        self.tasks.append(copy.deepcopy(self.base))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not len(self.tasks):
            return self.base(features)
        if self.routing.task_ids is None:
            return self.tasks[self.routing.training_task](features)
        names = [name for name, _ in self.base.named_parameters()]
        stacked = {name: torch.stack([dict(task.named_parameters())[name] for task in self.tasks]) for name in names}
        outputs = torch.func.vmap(lambda params: torch.func.functional_call(self.base, params, (features,)))(stacked)
        ids = self.routing.ids(outputs.shape[1], features.device)
        return outputs[ids, torch.arange(len(ids), device=features.device)]


def replace_projector(model: nn.Module, bank: nn.Module) -> None:
    old = projector(model)
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            if child is old:
                setattr(module, child_name, bank)
                return


@register_method("expansion")
class Expansion(Method):
    capabilities = Capabilities(grows_params=True, selects_task=True)
    Options = ExpansionOptions
    # only the projector copy trains, at its own option lr (training.lr reaches nothing here)
    search_space = {"lr": LogUniform(1e-4, 1e-2)}

    def __init__(self, options: ExpansionOptions) -> None:
        super().__init__(options)
        self.routing = Routing()
        self.bank: ProjectorBank | None = None
        self.selector: KeySelector | None = None
        self.model: nn.Module | None = None
        self.step_samples: list[dict[str, Any]] | None = None  # the training micro-batch's rows

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        freeze_all(model)
        if isinstance(getattr(model.config, "vision_feature_layer", -1), list):
            raise ConfigError("expansion supports a single vision feature layer")
        self.bank = ProjectorBank(projector(model), self.routing)
        replace_projector(model, self.bank)
        self.selector = KeySelector(image_feature_dim(model), model.get_input_embeddings().embedding_dim)
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

    def before_step(self, batch: dict[str, torch.Tensor], run: RunContext,
                    samples: list[dict[str, Any]] | None = None) -> None:
        self.step_samples = samples

    def loss(self, batch: dict[str, torch.Tensor], outputs: Any, run: RunContext) -> dict[str, torch.Tensor]:
        queries = self.selector.queries(self.model, batch, self.step_samples)
        return {"keys": self.options.key_weight * self.selector.key_loss(queries, self.routing.training_task)}

    def routes_by_choice_alone(self) -> bool:
        return True

    def route(self, batch: dict[str, torch.Tensor], run: RunContext, oracle: torch.Tensor | None = None,
              samples: list[dict[str, Any]] | None = None) -> torch.Tensor | None:
        if self.selector.n_tasks == 0:
            return None
        # the queries run the vision side (Qwen2-VL's includes the projector bank): the previous batch's
        # routing, whose shapes this batch need not share, must not apply there
        self.routing.task_ids, self.routing.row_samples = None, {}
        self.routing.task_ids = (self.selector.choose(self.model, batch, samples) if oracle is None
                                 else oracle.to(run.device))
        self.routing.row_samples = image_row_samples(self.model, batch)
        return self.routing.task_ids

    def state_dict(self) -> dict[str, Any]:
        return {"tasks": len(self.bank.tasks)}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        device = next(model.parameters()).device
        while len(self.bank.tasks) < state["tasks"]:
            self.bank.add_task()
            self.bank.tasks[-1].to(device)
            self.selector.add_task(device)
