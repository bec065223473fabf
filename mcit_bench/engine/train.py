"""The one training loop. It owns the optimiser, schedule, clipping and batching; methods add hooks."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch import nn

from mcit_bench.config import TrainingConfig
from mcit_bench.core.records import IGNORE_INDEX
from mcit_bench.methods.base import Method, RunContext, Stage, rows_of
from mcit_bench.models.anatomy import projector
from mcit_bench.models.collate import InstructionCollator
from mcit_bench.models.loading import compute_precision


@dataclass(frozen=True)
class StageStats:
    steps: int
    samples: int
    seconds: float
    final_loss: float
    trainable_params: int


def stage_seed(seed: int, stage_index: int) -> int:
    """Each stage draws its own randomness, so a resumed run repeats it exactly."""
    return seed * 1_000_003 + stage_index


def stage_steps(config: TrainingConfig, task_steps: Mapping[str, int | None], stage: Stage, n_samples: int) -> int:
    """Steps for a stage: the sum of its tasks' budgets (``--steps-per-task`` wins), or epochs over its data."""
    budgets = [config.steps_per_task or task_steps.get(task.name) for task in stage.tasks]
    if all(budget is not None for budget in budgets):
        return sum(budgets)
    return max(1, math.ceil(config.epochs * n_samples / config.batch_size))


def batch_indices(n_samples: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[list[int]]:
    """``steps`` batches of shuffled indices, reshuffling at each epoch boundary."""
    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch_size:
            order.extend(torch.randperm(n_samples, generator=generator).tolist())
        yield order[:batch_size]
        order = order[batch_size:]


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    return 1.0


def scaled(value: torch.Tensor, weight: float) -> torch.Tensor:
    """``value * weight``, leaving the tensor itself when the weight is 1 (one micro-batch, one process:
    training stays bit-identical to a loop without accumulation)."""
    return value if weight == 1 else value * weight


def answer_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens the NLL averages over: labelled positions after the shift by one."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def answer_token_weights(micro_batches: list[dict[str, torch.Tensor]], accelerator: Accelerator) -> list[float]:
    """Per micro-batch, the factor that turns its mean NLL into its share of the mean over every answer
    token of the global batch (all micro-batches, all processes): a split changes nothing. Gradients
    are averaged over processes by DDP, hence the factor of the process count."""
    counts = [answer_tokens(batch) for batch in micro_batches]
    mine = sum(counts)
    everyone = mine
    if accelerator.num_processes > 1:
        everyone = int(accelerator.reduce(torch.tensor(mine, device=accelerator.device), reduction="sum"))
    if len(counts) == 1 and everyone == mine:
        return [1.0]  # nothing to reweight: exactly the loop without accumulation
    return [count * accelerator.num_processes / max(everyone, 1) for count in counts]


def optimizer_groups(method: Method, model: nn.Module, config: TrainingConfig) -> list[dict]:
    """The method's parameter groups, with the projector's own weights at their learning rate if one is
    set. An adapter a method attaches to a projector layer (D-MoLE's experts) is the method's and trains
    at the method's rate, as the official code trains every expert at one rate."""
    groups = method.param_groups(model)
    if config.projector_lr is None:
        return groups
    projector_ids = {id(p) for name, p in projector(model).named_parameters() if ".adapter." not in f".{name}"}
    split: list[dict] = []
    for group in groups:
        if "lr" in group:  # the method chose this group's rate itself
            split.append(group)
            continue
        params = group["params"]
        rest = [p for p in params if id(p) not in projector_ids]
        proj = [p for p in params if id(p) in projector_ids]
        if rest:
            split.append({**group, "params": rest})
        if proj:
            split.append({**group, "params": proj, "lr": config.projector_lr})
    return split


def release_stage(accelerator: Accelerator, sharded: bool = False) -> None:
    """Drop the accelerator's hold on a stage's wrapped model and optimizer, so that the next stage does
    not keep this one's optimizer state. ``free_memory`` does so, then collects garbage and empties the
    device cache to hand the memory back. On CPU there is no cache and refcounting frees the state, while
    the full collection costs about 0.4 s a stage (a sixth of a test's quick run), so it is skipped, except
    under DDP: its wrapper hooks the trained weights, and a wrapper left in a reference cycle would still
    fire those hooks in the next stage. (A sharded run has no wrapper.)"""
    if accelerator.device.type != "cpu" or (accelerator.num_processes > 1 and not sharded):
        accelerator.free_memory()
        return
    for held in ("_models", "_optimizers", "_schedulers", "_dataloaders"):
        setattr(accelerator, held, [])
    accelerator.step = 0


def train_stage(
    model: nn.Module,
    method: Method,
    stage: Stage,
    run: RunContext,
    collator: InstructionCollator,
    config: TrainingConfig,
    task_steps: Mapping[str, int | None],
    accelerator: Accelerator,
    progress=None,
    precision: str = "fp32",
    sharded: bool = False,
) -> StageStats:
    """Train one stage: the method's data, the method's extra losses, AdamW with warm-up and clipping.

    ``sharded``: the frozen base is FSDP2-sharded (mcit_bench.engine.sharding) and what trains is replicated:
    no DDP wrapper, and the loop averages the replicated gradients itself on the last micro-batch.
    """
    data = method.train_data(stage, run)
    steps = stage_steps(config, task_steps, stage, len(data))
    generator = torch.Generator().manual_seed(stage_seed(run.seed, stage.index))
    groups = optimizer_groups(method, model, config)
    trainable = [p for group in groups for p in group["params"]]
    for parameter in trainable:  # bf16 runs: what trains keeps float32 master weights
        parameter.data = parameter.data.float()
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    n_trainable = sum(p.numel() for p in trainable)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    if sharded:
        from mcit_bench.engine.sharding import check_replicated

        check_replicated(method.name, model, trainable)
        prepared_model = model
    else:
        prepared_model, optimizer = accelerator.prepare(model, optimizer)
    prepared_model.train()
    warmup = int(config.warmup_ratio * steps)
    world, rank = accelerator.num_processes, accelerator.process_index
    task = progress.add_task(f"stage {stage.index} {stage.name}", total=steps, loss="") if progress else None
    started = time.perf_counter()
    recent: list[float] = []
    accumulate = config.grad_accum
    for step, indices in enumerate(batch_indices(len(data), config.batch_size * accumulate, steps, generator)):
        factor = lr_factor(step, steps, warmup, config.schedule)
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        # the global batch in ``accumulate`` micro-batches of ``batch_size``; every process takes its
        # share of each, so results depend on neither the split nor the process count
        micro_batches, micro_rows = [], []
        for part in range(accumulate):
            micro = indices[part * config.batch_size:(part + 1) * config.batch_size]
            rows = rows_of(data, micro[rank::world])
            batch = collator.train_batch(rows)
            micro_batches.append({name: value.to(accelerator.device) for name, value in batch.items()})
            micro_rows.append(rows)
        weights = answer_token_weights(micro_batches, accelerator)
        total_loss = 0.0
        for part, batch in enumerate(micro_batches):
            last = part == accumulate - 1
            with contextlib.nullcontext() if last or sharded else accelerator.no_sync(prepared_model):
                method.before_step(batch, run, micro_rows[part])
                with compute_precision(precision, accelerator.device):
                    outputs = prepared_model(**batch)
                    terms = {"nll": scaled(outputs.loss, weights[part]),
                             **{name: scaled(value, 1 / accumulate)  # once per optimiser step, not K times
                                for name, value in method.loss(batch, outputs, run).items()}}
                    total = sum(terms.values())
                accelerator.backward(total)
            total_loss += float(total.detach())
        if sharded and world > 1:
            from mcit_bench.engine.sharding import average_replicated_gradients

            average_replicated_gradients(trainable, world)
        accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        recent = (recent + [total_loss])[-20:]
        if progress is not None:
            progress.update(task, advance=1, loss=f"loss {sum(recent) / len(recent):.3f}")
    accelerator.wait_for_everyone()
    release_stage(accelerator, sharded)
    model.eval()
    if progress is not None:
        progress.remove_task(task)
    return StageStats(steps, steps * config.batch_size * accumulate, time.perf_counter() - started,
                      sum(recent) / max(1, len(recent)), n_trainable)
