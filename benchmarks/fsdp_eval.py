"""Evaluation of a sharded model: gathered once for the whole pass, against gathering every unit for
every generated token (what ``--shard fsdp`` did before), side by side in one launch.

    torchrun --nproc_per_node 2 benchmarks/fsdp_eval.py [--prompts 64] [--batch 16] [--new-tokens 24]

Both passes answer the same prompts greedily on mcit-tiny sharded over the processes; the per-token
pass steps every process in lockstep (``synced_gpus``), as it must when each forward gathers. Prints,
on rank 0, each pass's seconds, the ratio, the bytes each pass all-gathers per process, and whether
the answers agree.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist
from accelerate import Accelerator

from mcit_bench.data.synthetic import TASKS
from mcit_bench.engine.sharding import gathered, shard_model
from mcit_bench.models.collate import InstructionCollator
from mcit_bench.models.loading import load_model


def prompts(count: int) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for index in range(count):
        sample = TASKS["textvqa"].generate(rng)
        rows.append({"image": sample.image, "instruction": sample.instruction})
    return rows


def answer(model, collator, rows, batch: int, new_tokens: int, synced: bool) -> tuple[list[str], float]:
    started = time.perf_counter()
    answers = []
    with torch.no_grad():
        for start in range(0, len(rows), batch):
            inputs = collator.generation_batch(rows[start:start + batch])
            output = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                    pad_token_id=collator.tokenizer.pad_token_id, synced_gpus=synced)
            new = output[:, inputs["input_ids"].shape[1]:]
            answers += collator.tokenizer.batch_decode(new, skip_special_tokens=True)
    return answers, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=24)
    args = parser.parse_args()
    accelerator = Accelerator(cpu=True)
    model, processor = load_model("mcit-tiny")
    model.requires_grad_(False)
    collator = InstructionCollator(processor, processor.tokenizer.model_max_length)
    shard_model(model, accelerator, "fp32", keep=set())
    model.eval()
    rows = prompts(args.prompts)[accelerator.process_index::accelerator.num_processes]
    per_token, per_token_seconds = answer(model, collator, rows, args.batch, args.new_tokens, synced=True)
    with gathered(model, sharded=True):
        once, once_seconds = answer(model, collator, rows, args.batch, args.new_tokens, synced=False)
    whole = sum(p.numel() * p.element_size() for p in model.parameters())
    steps = -(-len(rows) // args.batch) * args.new_tokens
    if accelerator.is_main_process:
        print(f"{accelerator.num_processes} processes, {args.prompts} prompts, batch {args.batch}, "
              f"{args.new_tokens} new tokens each")
        print(f"  gathered per token: {per_token_seconds:.2f} s, about {steps} gathers of the whole base "
              f"({steps * whole / 2**20:.0f} MiB gathered per process)")
        print(f"  gathered once:      {once_seconds:.2f} s, one gather ({whole / 2**20:.1f} MiB)")
        print(f"  ratio once / per token: {once_seconds / per_token_seconds:.3f}; same answers: {once == per_token}")
    dist.barrier()


if __name__ == "__main__":
    main()
