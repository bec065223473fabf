"""D-MoLE (dmole; Ge et al., ICML 2025): per-task LoRA experts where a zero-cost proxy says they matter.

One file past 400 lines, as every method is one file (no plugin imports another): the proxy, the
layer allocation, the autoencoder router and the gradient-based curriculum are D-MoLE's alone.

Follows the public code (gcd19/D-MoLE) where it and the paper differ; docs/METHODS.md lists each
choice with its source. All base weights stay frozen. Before task t:
- Zero-cost proxy: the language-modelling loss of ``proxy_fraction`` of its training batches (at
  least one) is back-propagated through the base model with the gradients accumulating, and each
  candidate scores the norm of its accumulated gradient (weight and bias norms summed), as
  ``compute_zc_score.py`` does. Candidates are the attention projections (the public code's target
  list: ``attn.qkv``, ``attn.proj``, ``attention.wqkv``, ``attention.wo``) of the vision encoder and
  of the language model, plus the projector's linear layers on the vision side: mcit-tiny's
  projector reads the tower's hidden state 0, so no tower layer reaches the loss there and without
  the projector D-MoLE would have no vision side at all. A candidate the loss does not reach (no
  gradient) cannot change an answer and is dropped for that task.
- Inter-modal curriculum: a budget of ``budget_fraction`` of the candidates is split between the
  vision and language sides in proportion to their summed scores, the vision side keeping at least
  ``min_vision_share`` (the public code keeps 25%); the top-scored layers of each side get a new
  LoRA expert (rank 8, alpha 16) owned by task t. Only task t's experts train.
- Router: per task an autoencoder (d -> d / ``router_compression`` -> d, ReLU then sigmoid, as
  ``internvl/model/autoencoder.py``) over a frozen sequence embedding, experts off: the vision
  encoder's last hidden state max-pooled beside the language model's last hidden state over the
  instruction text alone, max-pooled, L2-normalised together (``extract_sequence_feature``). It
  trains on the task's training samples with MSE, Adam at 5e-3 with a cosine schedule down to 1e-3
  and early stopping after 10 epochs without improvement (``train_autoencoder.py``); its threshold
  is the ``threshold_quantile`` of its errors on ``router_holdout`` of the samples it did not train on.
- Routing (``get_task_ids``): each sample's candidate is the task with the lowest error among those
  under their thresholds. ``vote: sample`` (default) keeps that choice per sample, with the best
  candidate among the tasks before it as a second active task; ``vote: batch`` is the public code's
  rule: the batch's majority task, plus a second one holding at least ``vote_share`` of the votes.
  In training, a past task chosen the same way adds its frozen experts beside task t's
  (``past_experts``). No task passing means the base model answers.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from mcit_bench.adapters.experts import Routing, TaskExperts, attach_adapters
from mcit_bench.adapters.lora import freeze_all
from mcit_bench.core.errors import ConfigError
from mcit_bench.methods.base import (
    Capabilities,
    Method,
    MethodOptions,
    RunContext,
    Stage,
    register_method,
    rows_of,
    training_batch,
)
from mcit_bench.methods.distributed import summed_over_processes
from mcit_bench.methods.gradients import linear_weight_gradients
from mcit_bench.methods.sample_values import SampleValues
from mcit_bench.methods.search import LR, Choice
from mcit_bench.methods.selector import instruction_mask
from mcit_bench.models.anatomy import image_row_samples, language_model, pooled_image_features, projector, vision_tower

NO_TASK = -1  # routed to no task: the base model answers


class DMoLEOptions(MethodOptions):
    rank: int = Field(default=8, gt=0)
    alpha: float = Field(default=16.0, gt=0)
    budget_fraction: float = Field(default=0.5, gt=0.0, le=1.0)  # of the candidate layers, per task
    min_vision_share: float = Field(default=0.25, ge=0.0, le=1.0)
    proxy_fraction: float = Field(default=0.01, gt=0.0, le=1.0)  # of the task's training batches
    proxy_batch_size: int = Field(default=32, gt=0)
    # input width over bottleneck width: the public code's 3072 -> 128 on InternVL2-2B
    router_compression: float = Field(default=24.0, ge=1.0)
    router_epochs: int = Field(default=1000, gt=0)  # an upper bound: early stopping ends it
    router_patience: int = Field(default=10, gt=0)
    router_batch_size: int = Field(default=1024, gt=0)
    router_holdout: float = Field(default=0.1, gt=0.0, lt=1.0)  # of the task's samples, for the threshold
    threshold_quantile: float = Field(default=0.95, gt=0.0, le=1.0)
    vote: Literal["sample", "batch"] = "sample"
    vote_share: float = Field(default=0.3, gt=0.0, le=1.0)  # of the valid votes, for a second task
    # in training, a past task the routers choose also runs its (frozen) experts
    past_experts: bool = True


def name_of(model: nn.Module, part: nn.Module) -> str:
    return next(name for name, module in model.named_modules() if module is part)


def attention_names(model: nn.Module, root: nn.Module) -> list[str]:
    """Full names of the linear layers of ``root`` that sit directly in an attention block."""
    prefix = name_of(model, root)
    return [f"{prefix}.{parent}.{child}" for parent, block in root.named_modules()
            if "Attention" in type(block).__name__
            for child, module in block.named_children() if isinstance(module, nn.Linear)]


def linear_names(model: nn.Module, root: nn.Module) -> list[str]:
    prefix = name_of(model, root)
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


def candidates_of(errors: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """``errors`` with every error not under its task's threshold (the public code's strict <) made inf."""
    return errors.masked_fill(errors >= thresholds, float("inf"))


def older_candidate(candidates: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """Per sample, the lowest-error candidate among the tasks before its ``first`` (NO_TASK: none).

    In training, task t's experts learnt beside the past task each sample's routers chose then, from
    these same routers (all of them older than t): this pairs them again at evaluation.
    """
    older = torch.arange(candidates.shape[1], device=candidates.device).unsqueeze(0) < first.unsqueeze(1)
    best = candidates.masked_fill(~older, float("inf")).min(dim=1)
    return torch.where(torch.isinf(best.values), torch.full_like(first, NO_TASK), best.indices)


def vote_routes(errors: torch.Tensor, thresholds: torch.Tensor, vote: str, vote_share: float,
                training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, second) task per sample from the routers' errors [samples, tasks]; NO_TASK for none.

    A task is a candidate for a sample when its error is under its threshold; the sample's choice is
    the candidate with the lowest error. ``sample``: the first task is that choice and the second
    the best candidate among the tasks trained before it. ``batch`` (the public code's
    ``get_task_ids``): the whole batch takes the most voted choice (in training only when it holds
    ``vote_share`` of the votes) and, at evaluation, the next most voted when it does. In training
    every router is a past task's, and only the first is used: the training task's own experts are
    always on.
    """
    candidates = candidates_of(errors, thresholds)
    ranked = candidates.sort(dim=1)
    none = torch.full((errors.shape[0],), NO_TASK, dtype=torch.long, device=errors.device)

    def pick(column: int) -> torch.Tensor:
        if column >= errors.shape[1]:
            return none
        return torch.where(torch.isinf(ranked.values[:, column]), none, ranked.indices[:, column])

    first = pick(0)
    if vote == "sample":
        return first, none if training else older_candidate(candidates, first)
    valid = first[first != NO_TASK]
    if valid.numel() == 0:
        return none, none
    votes = torch.bincount(valid, minlength=errors.shape[1]).float()
    top = int(votes.argmax())  # ties: the earliest task, as numpy's argmax in the public code
    support = votes / valid.numel()
    if training:
        return (torch.full_like(none, top) if support[top] >= vote_share else none), none
    votes[top] = 0
    runner = int(votes.argmax())
    second = torch.full_like(none, runner) if votes[runner] > 0 and support[runner] >= vote_share else none
    return torch.full_like(none, top), second


class AutoEncoder(nn.Module):
    """The public code's router: Linear, ReLU, Linear, sigmoid; a sample's error is its mean squared error."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.encode = nn.Linear(dim, hidden)
        self.decode = nn.Linear(hidden, dim)

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        return ((torch.sigmoid(self.decode(torch.relu(self.encode(x)))) - x) ** 2).mean(-1)


def train_router(embeddings: torch.Tensor, hidden: int, options: DMoLEOptions, seed: int) -> AutoEncoder:
    """Adam at 5e-3, cosine to 1e-3 over ``router_epochs``, stopped after ``router_patience`` epochs
    without a lower mean training loss (``train_autoencoder.py``)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    router = AutoEncoder(embeddings.shape[1], hidden).to(embeddings.device)
    optimizer = torch.optim.Adam(router.parameters(), lr=5e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=options.router_epochs, eta_min=1e-3)
    best, stale = float("inf"), 0
    with torch.enable_grad():
        for _ in range(options.router_epochs):
            order = torch.randperm(len(embeddings), generator=generator).to(embeddings.device)
            losses = []
            for start in range(0, len(order), options.router_batch_size):
                optimizer.zero_grad()
                loss = router.errors(embeddings[order[start:start + options.router_batch_size]]).mean()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            schedule.step()
            epoch_loss = sum(losses) / len(losses)
            best, stale = (epoch_loss, 0) if epoch_loss < best else (best, stale + 1)
            if stale >= options.router_patience:
                break
    return router.requires_grad_(False)


@register_method("dmole")
class DMoLE(Method):
    capabilities = Capabilities(grows_params=True, selects_task=True)
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
        # each sample's router embedding by its content (image, instruction): it reads frozen weights
        # only (experts off), so it is computed once, not at every step and every stage's evaluation
        self.embedding_cache = SampleValues()

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        freeze_all(model)
        try:
            vision = vision_tower(model)
        except ConfigError:
            raise ConfigError(f"dmole adapts the vision encoder too, and {type(model).__name__} has none "
                              f"this harness knows; choose another method for this model") from None
        self.vision_names = set(attention_names(model, vision)) | set(linear_names(model, projector(model)))
        candidates = sorted(self.vision_names) + attention_names(model, language_model(model))
        o = self.options
        self.experts = attach_adapters(model, candidates, lambda name, linear: TaskExperts(
            linear.in_features, linear.out_features, o.rank, o.alpha, self.routing))
        self.model, self.collator = model, run.collator
        return model

    # ------------------------------------------------------------------ allocation
    def proxy_scores(self, stage: Stage, run: RunContext) -> dict[str, float | None]:
        """Per candidate, the norm of its gradient accumulated over the proxy batches (weight and
        bias norms summed, the weight's squared norm summed over the processes' row shares); None
        where the loss never reaches the layer. The gradients come from hooks
        (``methods.gradients``), so the frozen and possibly sharded weights need no gradient."""
        data = self.train_data(stage, run)
        size = self.options.proxy_batch_size
        n_batches = max(1, math.ceil(self.options.proxy_fraction * len(data) / size))
        generator = torch.Generator().manual_seed(run.seed * 1000 + stage.index)
        order = torch.randperm(len(data), generator=generator).tolist()
        batches = (training_batch(run, rows_of(data, order[b * size:(b + 1) * size])) for b in range(n_batches))
        self.routing.enabled = False
        try:
            weight_grads, bias_grads = linear_weight_gradients(self.model, list(self.experts), batches)
        finally:
            self.routing.enabled = True
        scores: dict[str, float | None] = dict.fromkeys(self.experts)
        reached = sorted(weight_grads)  # the same on every process: the same batches reach the same layers
        if reached:
            squares = summed_over_processes(torch.stack([weight_grads[name].square().sum() for name in reached]))
            for name, square in zip(reached, squares.tolist()):
                scores[name] = math.sqrt(square) + (float(bias_grads[name].norm()) if name in bias_grads else 0.0)
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
    def instruction_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The frozen language model's last hidden state over each sample's instruction text alone
        (no image tokens, no answer), max-pooled: ``extract_sequence_feature``'s text half."""
        mask = instruction_mask(self.model, batch)
        lengths = mask.sum(1)
        ids = batch["input_ids"].new_zeros(len(mask), int(lengths.max()))
        keep = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0) < lengths.unsqueeze(1)
        ids[keep] = batch["input_ids"][mask]  # each sample's instruction tokens, left-aligned
        states = language_model(self.model)(input_ids=ids, attention_mask=keep.long()).last_hidden_state
        return states.masked_fill(~keep.unsqueeze(-1), float("-inf")).amax(1)

    @torch.no_grad()
    def embeddings(self, batch: dict[str, torch.Tensor], samples: list[dict[str, Any]] | None = None,
                   training: bool = True) -> torch.Tensor:
        """[max-pooled vision features; max-pooled instruction states], experts off, L2-normalised together;
        each sample's computed once (``samples``, the batch's rows) and then read; in training (steps and
        ``after_task``) every process computes when any has a new sample, as a sharded model needs."""
        return self.embedding_cache.of(samples, lambda: (self.embed(batch),), together=training)[0]

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.routing.enabled = False
        try:
            _, image = pooled_image_features(self.model, batch)
            text = self.instruction_states(batch)
        finally:
            self.routing.enabled = True
        return F.normalize(torch.cat([image.float(), text.float()], dim=-1), dim=-1)

    def task_embeddings(self, stage: Stage, run: RunContext) -> torch.Tensor:
        data = self.train_data(stage, run)
        parts = []
        for start in range(0, len(data), 64):
            rows = rows_of(data, list(range(start, min(start + 64, len(data)))))
            batch = {k: v.to(run.device) for k, v in self.collator.train_batch(rows).items()}
            parts.append(self.embeddings(batch, rows))
        return torch.cat(parts)

    def after_task(self, stage: Stage, run: RunContext) -> None:
        embeddings = self.task_embeddings(stage, run)
        seed = run.seed * 1000 + stage.index
        order = torch.randperm(len(embeddings), generator=torch.Generator().manual_seed(seed)).to(embeddings.device)
        held = min(len(order) - 1, max(1, round(self.options.router_holdout * len(order))))
        # a task of one sample has nothing to hold out: its threshold comes from the sample it trained
        # on, as the public code's thresholds all do
        train, threshold_set = (order[held:], order[:held]) if held >= 1 else (order, order)
        hidden = max(1, round(embeddings.shape[1] / self.options.router_compression))
        router = train_router(embeddings[train], hidden, self.options, seed)
        with torch.no_grad():
            threshold = float(torch.quantile(router.errors(embeddings[threshold_set]), self.options.threshold_quantile))
        self.routers.append(router)
        self.thresholds.append(threshold)

    def errors(self, batch: dict[str, torch.Tensor], samples: list[dict[str, Any]] | None = None,
               training: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Every router's reconstruction error per sample [samples, tasks], and the thresholds."""
        embeddings = self.embeddings(batch, samples, training)
        with torch.no_grad():
            errors = torch.stack([router.errors(embeddings) for router in self.routers], dim=1)
        return errors, torch.tensor(self.thresholds, device=errors.device)

    def choose(self, batch: dict[str, torch.Tensor], training: bool, samples: list[dict[str, Any]] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(first, second) task per sample by the routers (:func:`vote_routes`)."""
        errors, thresholds = self.errors(batch, samples, training)
        return vote_routes(errors, thresholds, self.options.vote, self.options.vote_share, training)

    def before_step(self, batch: dict[str, torch.Tensor], run: RunContext,
                    samples: list[dict[str, Any]] | None = None) -> None:
        # the public code's training-time routing: a past task the routers choose adds its experts, frozen
        if self.options.past_experts and self.routers:
            self.routing.past_ids, _ = self.choose(batch, training=True, samples=samples)
            self.routing.row_samples = image_row_samples(self.model, batch)

    def routes_by_choice_alone(self) -> bool:
        return self.options.vote == "sample"  # a batch vote routes a sample by its neighbours too

    def route(self, batch: dict[str, torch.Tensor], run: RunContext, oracle: torch.Tensor | None = None,
              samples: list[dict[str, Any]] | None = None) -> torch.Tensor | None:
        if not self.routers:
            return None
        if oracle is None:
            chosen, second = self.choose(batch, training=False, samples=samples)
        else:  # the true task, beside the older task its routers pair it with: no task-choice errors
            errors, thresholds = self.errors(batch, samples, training=False)
            chosen = oracle.to(errors.device)
            second = older_candidate(candidates_of(errors, thresholds), chosen)
        self.routing.task_ids, self.routing.past_ids = chosen, second
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
