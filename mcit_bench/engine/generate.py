"""Batched greedy generation on a task's evaluation split, shared over the processes, and the
predictions files it leaves."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mcit_bench.engine.sharding import gathered
from mcit_bench.methods.base import Method, RunContext, rows_of
from mcit_bench.models.collate import InstructionCollator
from mcit_bench.models.loading import compute_precision
from mcit_bench.rundir import ORACLE_PREDICTIONS, RunPaths, write_predictions

if TYPE_CHECKING:
    from accelerate import Accelerator

    from mcit_bench.config import RunConfig

# Only these fields reach the model and the method's router: never the task name or the answer.
MODEL_FIELDS = ("image", "instruction")


@torch.no_grad()
def generate_answers(
    model: nn.Module,
    collator: InstructionCollator,
    rows: list[dict[str, Any]],
    batch_size: int,
    max_new_tokens: int,
    method: Method | None = None,
    run: RunContext | None = None,
    device: torch.device = torch.device("cpu"),
    oracle_task: int | None = None,
) -> tuple[list[str], list[int] | None]:
    """Greedy answers for ``rows`` in order (left padding, KV cache, stop at end of turn), and the
    task the method's selector chose for each row (None when the method does not select). With
    ``oracle_task`` a selecting method routes every row to that task instead of choosing."""
    model.eval()
    tokenizer = collator.tokenizer
    answers: list[str] = []
    chosen: list[int] = []
    selects = False
    for start in range(0, len(rows), batch_size):
        chunk = [{name: row[name] for name in MODEL_FIELDS} for row in rows[start : start + batch_size]]
        batch = {name: value.to(device) for name, value in collator.generation_batch(chunk).items()}
        oracle = None if oracle_task is None else torch.full((len(chunk),), oracle_task, dtype=torch.long)
        selected = method.route(batch, run, oracle, chunk) if method is not None else None
        if selected is not None:
            selects = True
            chosen.extend(int(task) for task in selected.tolist())
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            # a sharded model is gathered whole for evaluation (``gathered``), so each process generates its
            # own rows alone: transformers would otherwise step every process in lockstep, and one with
            # fewer batches (an oracle pass of a few rows) would leave the others waiting forever
            synced_gpus=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        answers.extend(text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return answers, (chosen if selects else None)


def test_rows(dataset) -> list[dict[str, Any]]:
    return rows_of(dataset, list(range(len(dataset))))


def generate_sharded(accelerator: Accelerator, model: nn.Module, collator: InstructionCollator,
                     rows: list[dict[str, Any]], config: RunConfig, method: Method, run: RunContext,
                     oracle_task: int | None = None) -> tuple[list[str], list[int] | None]:
    """Every process answers every ``world``-th row; the answers come back to all, in row order,
    each row exactly once."""
    world, rank = accelerator.num_processes, accelerator.process_index
    with compute_precision(config.precision, run.device):
        answers, chosen = generate_answers(model, collator, rows[rank::world], config.eval.batch_size,
                                           config.eval.max_new_tokens, method, run, run.device, oracle_task)
    if world == 1:
        return answers, chosen
    from accelerate.utils import gather_object

    shards = {shard_rank: (shard_answers, shard_chosen)
              for shard_rank, shard_answers, shard_chosen in gather_object([(rank, answers, chosen)])}
    ordered_answers: list[str] = [""] * len(rows)
    ordered_chosen: list[int] = [0] * len(rows)
    selects = False
    for shard_rank, (shard_answers, shard_chosen) in shards.items():
        ordered_answers[shard_rank::world] = shard_answers
        if shard_chosen is not None:
            selects = True
            ordered_chosen[shard_rank::world] = shard_chosen
    return ordered_answers, (ordered_chosen if selects else None)


def oracle_answers(accelerator: Accelerator, model: nn.Module, collator: InstructionCollator,
                   rows: list[dict[str, Any]], config: RunConfig, method: Method, run: RunContext, position: int,
                   routed: list[str], chosen: list[int]) -> list[str]:
    """Every row answered with the route of its true task (``position``). A method that routes by its
    choice alone answered the rows it sent there already; only the others are generated again (the
    same on every process, as ``chosen`` is)."""
    redo = range(len(rows)) if not method.routes_by_choice_alone() else [i for i, c in enumerate(chosen)
                                                                          if c != position]
    answers = list(routed)
    if redo:
        again, _ = generate_sharded(accelerator, model, collator, [rows[i] for i in redo], config, method, run,
                                    position)
        for index, answer in zip(redo, again):
            answers[index] = answer
    return answers


@dataclass
class Answered:
    """What answering every task after a stage reports besides the predictions files: a selecting
    method's task selection per trained task (in %), and the seconds its oracle pass took, which are
    the harness's report (the oracle matrix), not the method's cost."""

    selection: dict[str, float] = field(default_factory=dict)
    oracle_seconds: float = 0.0


def answer_every_task(accelerator: Accelerator, model: nn.Module, collator: InstructionCollator,
                      config: RunConfig, method: Method, run: RunContext, test_sets: dict[str, Any],
                      paths: RunPaths, stage: int) -> Answered:
    """Answer every task's evaluation split after ``stage`` (0: the base model); the main process
    writes the predictions files, which are what the run scores (``results/scoring.py``).

    A sharded model is gathered whole first (:func:`gathered`), so no forward waits on another
    process. A method that selects tasks without labels also answers each trained task again routed
    by its true id (the oracle predictions); :class:`Answered` says how its choices went and what the
    oracle pass cost.
    """
    answered = Answered()
    with gathered(model, config.shard is not None):
        for position, task in enumerate(run.stream.tasks):
            rows = test_rows(test_sets[task.name])
            predictions, chosen = generate_sharded(accelerator, model, collator, rows, config, method, run)
            if accelerator.is_main_process:
                write_predictions(paths.predictions(stage, task.name), rows, predictions)
            if chosen is not None and 0 < stage and position < stage:
                answered.selection[task.name] = round(100.0 * sum(c == position for c in chosen) / len(chosen), 2)
                started = time.perf_counter()
                oracle = oracle_answers(accelerator, model, collator, rows, config, method, run, position,
                                        predictions, chosen)
                if accelerator.is_main_process:
                    write_predictions(paths.predictions(stage, task.name, ORACLE_PREDICTIONS), rows, oracle)
                answered.oracle_seconds += time.perf_counter() - started
    return answered
