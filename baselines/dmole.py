"""D-MoLE (dmole; Ge et al., ICML 2025): per-task LoRA experts where a zero-cost proxy says they matter.

All base weights stay frozen. Before task t:
- Zero-cost proxy: the language-modelling loss of ``proxy_fraction`` of its training batches (at
  least one) is back-propagated through the base model, and each candidate linear layer (every
  linear layer of the vision encoder and of the language model) scores the norm of its weight's
  gradient, summed over the batches. A layer the loss does not reach (no gradient: a vision layer
  after the hidden state the projector reads, as all four of mcit-tiny's) cannot change an answer
  and is not a candidate for that task.
- Inter-modal curriculum: a budget of ``budget_fraction`` of the candidates is split between the
  vision and language sides in proportion to their summed scores, the vision side keeping at least
  ``min_vision_share`` (the public code keeps 25%); the top-scored layers of each side get a new
  LoRA expert (rank 8, alpha 16) owned by task t. Only task t's experts train.
- Router: per task a small autoencoder (d -> hidden -> d) over a frozen sequence embedding (the
  max-pooled vision features and the max-pooled instruction embeddings, experts off, L2-normalised),
  trained with MSE (Adam, lr 5e-3, as in the public code); its threshold is the ``threshold_quantile``
  of its own reconstruction errors. At evaluation each sample goes to the task with the lowest
  error among those under their thresholds; none passing means the base model (no expert).
Not implemented: the public code may also switch on a past task's experts while training task t
when its router claims the sample; here training uses task t's experts only.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from mcit_bench.adapters.experts import Routing, TaskExperts, attach_adapters
from mcit_bench.adapters.lora import freeze_all
from mcit_bench.errors import ConfigError
from mcit_bench.methods.base import (
    Capabilities,
    Method,
    MethodOptions,
    RunContext,
    Stage,
    register_method,
    rows_of,
)
from mcit_bench.methods.search import LR, Choice
from mcit_bench.methods.selector import instruction_mask
from mcit_bench.models.loading import image_row_samples, language_model, pooled_image_features, vision_tower

NO_TASK = -1  # routed to no task: the base model answers


class DMoLEOptions(MethodOptions):
    rank: int = Field(default=8, gt=0)
    alpha: float = Field(default=16.0, gt=0)
    budget_fraction: float = Field(default=0.5, gt=0.0, le=1.0)  # of the candidate layers, per task
    min_vision_share: float = Field(default=0.25, ge=0.0, le=1.0)
    proxy_fraction: float = Field(default=0.01, gt=0.0, le=1.0)  # of the task's training batches
    proxy_batch_size: int = Field(default=32, gt=0)
    router_hidden: int = Field(default=128, gt=0)
    router_samples: int = Field(default=512, gt=0)
    router_epochs: int = Field(default=20, gt=0)
    threshold_quantile: float = Field(default=0.95, gt=0.0, le=1.0)
    # in training, a sample the routers give to a past task also runs that task's (frozen) experts
    past_experts: bool = True


def linear_names(model: nn.Module, root: nn.Module) -> list[str]:
    prefix = next(name for name, module in model.named_modules() if module is root)
    return [f"{prefix}.{name}" for name, module in root.named_modules() if isinstance(module, nn.Linear)]


def allocate(scores: dict[str, float], vision: set[str], budget: int, min_vision_share: float) -> list[str]:
    """The budget split by summed score between the two sides, then the top layers of each side."""
    vision_scores = {n: s for n, s in scores.items() if n in vision}
    language_scores = {n: s for n, s in scores.items() if n not in vision}
    total = sum(scores.values()) or 1.0
    share = max(min_vision_share, sum(vision_scores.values()) / total) if vision_scores else 0.0
    n_vision = min(len(vision_scores), round(budget * share))
    n_language = min(len(language_scores), budget - n_vision)

    def top(side: dict[str, float], n: int) -> list[str]:
        return sorted(side, key=lambda name: (-side[name], name))[:n]

    return sorted(top(vision_scores, n_vision) + top(language_scores, n_language))


class AutoEncoder(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.encode = nn.Linear(dim, hidden)
        self.decode = nn.Linear(hidden, dim)

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.decode(torch.relu(self.encode(x))) - x) ** 2).mean(-1)


@register_method("dmole")
class DMoLE(Method):
    capabilities = Capabilities(grows_params=True)
    Options = DMoLEOptions
    # the rank of every expert
    search_space = {**LR, "rank": Choice((4, 8, 16))}

    def __init__(self, options: DMoLEOptions) -> None:
        super().__init__(options)
        self.routing = Routing()
        self.experts: dict[str, TaskExperts] = {}
        self.vision_names: set[str] = set()
        self.model: nn.Module | None = None
        self.collator = None
        self.allocations: list[list[str]] = []
        self.routers: list[AutoEncoder] = []
        self.thresholds: list[float] = []

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        freeze_all(model)
        try:
            vision = vision_tower(model)
        except ConfigError:
            raise ConfigError(f"dmole adapts the vision encoder too, and {type(model).__name__} has none "
                              f"this harness knows; choose another method for this model") from None
        self.vision_names = set(linear_names(model, vision))
        candidates = sorted(self.vision_names) + linear_names(model, language_model(model))
        o = self.options
        self.experts = attach_adapters(model, candidates, lambda name, linear: TaskExperts(
            linear.in_features, linear.out_features, o.rank, o.alpha, self.routing))
        self.model, self.collator = model, run.collator
        return model

    # ------------------------------------------------------------------ allocation
    def proxy_scores(self, stage: Stage, run: RunContext) -> dict[str, float | None]:
        """Per candidate, its weight's gradient norm summed over the proxy batches; None where the
        loss never reaches the layer.

        The gradient of a linear layer's weight is the sum over tokens of (dL/d output) x input^T, so
        it is formed from the two with hooks instead of asking the weight for its gradient: the same
        numbers, but the frozen weights never need ``requires_grad``, which a sharded weight (FSDP2,
        ``--shard fsdp``) could not give. A zero that requires grad is added to each candidate's
        output, so the loss has a gradient to follow and every output gets its dL/d output.
        """
        data = self.train_data(stage, run)
        n_batches = max(1, math.ceil(self.options.proxy_fraction * len(data) / self.options.proxy_batch_size))
        generator = torch.Generator().manual_seed(run.seed * 1000 + stage.index)
        order = torch.randperm(len(data), generator=generator).tolist()
        modules = dict(self.model.named_modules())
        probe = torch.zeros((), device=run.device, requires_grad=True)
        batch_grads: dict[str, torch.Tensor] = {}

        def capture(name: str):
            def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
                x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
                output = output + probe

                def weight_grad(grad: torch.Tensor) -> None:
                    g = grad.reshape(-1, grad.shape[-1]).float()
                    batch_grads[name] = batch_grads.get(name, 0) + g.T @ x

                output.register_hook(weight_grad)
                return output
            return hook

        handles = [modules[name].register_forward_hook(capture(name)) for name in self.experts]
        scores: dict[str, float | None] = dict.fromkeys(self.experts)
        self.routing.enabled = False
        try:
            for b in range(n_batches):
                rows = rows_of(data, order[b * self.options.proxy_batch_size:(b + 1) * self.options.proxy_batch_size])
                batch = {k: v.to(run.device) for k, v in self.collator.train_batch(rows).items()}
                batch_grads.clear()
                self.model(**batch).loss.backward()
                for name, grad in batch_grads.items():
                    scores[name] = (scores[name] or 0.0) + float(grad.norm())
        finally:
            self.routing.enabled = True
            for handle in handles:
                handle.remove()
            batch_grads.clear()
        return scores

    def before_task(self, stage: Stage, run: RunContext) -> None:
        task = stage.index - 1
        if len(self.allocations) <= task:
            scores = {name: score for name, score in self.proxy_scores(stage, run).items() if score is not None}
            budget = max(1, round(self.options.budget_fraction * len(scores)))
            self.allocations.append(allocate(scores, self.vision_names, budget, self.options.min_vision_share))
            self.grow(task, run.seed)
        freeze_all(self.model)
        for name in self.allocations[task]:
            layer = self.experts[name]
            index = layer.owners.index(task)
            layer.lora_A[index].requires_grad_(True)
            layer.lora_B[index].requires_grad_(True)
        self.routing.training_task, self.routing.task_ids, self.routing.past_ids = task, None, None

    def grow(self, task: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed * 1000 + task)
        device = next(self.model.parameters()).device
        for name in self.allocations[task]:
            self.experts[name].add_expert(task, generator, device)

    # ------------------------------------------------------------------ routing
    @torch.no_grad()
    def embeddings(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Max-pooled vision features and instruction embeddings, experts off, L2-normalised."""
        self.routing.enabled = False
        try:
            _, image = pooled_image_features(self.model, batch)
            instruction = instruction_mask(self.model, batch)
            text = self.model.get_input_embeddings()(batch["input_ids"])
            text = text.masked_fill(~instruction.unsqueeze(-1), float("-inf")).amax(1)
        finally:
            self.routing.enabled = True
        return F.normalize(torch.cat([image, text], dim=-1).float(), dim=-1)

    def after_task(self, stage: Stage, run: RunContext) -> None:
        data = self.train_data(stage, run)
        generator = torch.Generator().manual_seed(run.seed * 1000 + stage.index)
        indices = torch.randperm(len(data), generator=generator)[: self.options.router_samples].tolist()
        batches = (self.collator.train_batch(rows_of(data, indices[i:i + 64])) for i in range(0, len(indices), 64))
        parts = [self.embeddings({k: v.to(run.device) for k, v in batch.items()}) for batch in batches]
        embeddings = torch.cat(parts)
        torch.manual_seed(run.seed * 1000 + stage.index)
        router = AutoEncoder(embeddings.shape[1], self.options.router_hidden).to(embeddings.device)
        optimizer = torch.optim.Adam(router.parameters(), lr=5e-3)
        with torch.enable_grad():
            for _ in range(self.options.router_epochs):
                for start in range(0, len(embeddings), 64):
                    optimizer.zero_grad()
                    router.errors(embeddings[start:start + 64]).mean().backward()
                    optimizer.step()
        router.requires_grad_(False)
        with torch.no_grad():
            threshold = float(torch.quantile(router.errors(embeddings), self.options.threshold_quantile))
        self.routers.append(router)
        self.thresholds.append(threshold)

    def choose(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per sample, the task whose router reconstructs it best under its threshold (NO_TASK: none)."""
        embeddings = self.embeddings(batch)
        with torch.no_grad():
            errors = torch.stack([router.errors(embeddings) for router in self.routers], dim=1)
        thresholds = torch.tensor(self.thresholds, device=errors.device)
        errors = errors.masked_fill(errors > thresholds, float("inf"))
        best = errors.argmin(dim=1)
        return torch.where(torch.isinf(errors.min(dim=1).values), torch.full_like(best, NO_TASK), best)

    def before_step(self, batch: dict[str, torch.Tensor], run: RunContext) -> None:
        # the paper's training-time routing: a past task the routers pick adds its experts, frozen
        if self.options.past_experts and self.routers:
            self.routing.past_ids = self.choose(batch)
            self.routing.row_samples = image_row_samples(self.model, batch)

    def route(self, batch: dict[str, torch.Tensor], run: RunContext,
              oracle: torch.Tensor | None = None) -> torch.Tensor | None:
        if not self.routers:
            return None
        chosen = self.choose(batch) if oracle is None else oracle.to(run.device)
        self.routing.task_ids, self.routing.past_ids = chosen, None
        self.routing.row_samples = image_row_samples(self.model, batch)
        return chosen

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"allocations": self.allocations, "thresholds": self.thresholds}
        for index, router in enumerate(self.routers):
            state.update({f"router.{index}.{k}": v for k, v in router.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        self.allocations = [list(names) for names in state["allocations"]]
        self.thresholds = [float(t) for t in state["thresholds"]]
        for task in range(len(self.allocations)):
            self.grow(task, 0)  # shapes only: the weights are loaded next
        device = next(model.parameters()).device
        self.routers = []
        for index in range(len(self.thresholds)):
            weights = {k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"router.{index}.")}
            router = AutoEncoder(weights["encode.weight"].shape[1], weights["encode.weight"].shape[0])
            router.load_state_dict(weights)
            self.routers.append(router.to(device).requires_grad_(False))
