"""Batched greedy generation on a task's test split, and the predictions files it leaves."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mcit_bench.methods.base import Method, RunContext, rows_of
from mcit_bench.models.collate import InstructionCollator

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
        selected = method.route(batch, run, oracle) if method is not None else None
        if selected is not None:
            selects = True
            chosen.extend(int(task) for task in selected.tolist())
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        answers.extend(text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return answers, (chosen if selects else None)


def test_rows(dataset) -> list[dict[str, Any]]:
    return rows_of(dataset, list(range(len(dataset))))
