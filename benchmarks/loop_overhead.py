"""Harness overhead: the mcit-bench training loop against a bare PyTorch loop, side by side.

Both loops train the same LoRA model on the same batches (the same indices through the same
collator, whose cache is warmed first so neither pays the image processor) for the same number of
steps; rounds alternate between them so drift of the machine hits both. Prints samples per second of
each and their ratio (harness / bare); the target is >= 0.95.

    python benchmarks/loop_overhead.py [--steps 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from accelerate import Accelerator

from mcit_bench.config import RunConfig, TrainingConfig
from mcit_bench.data.prepare import default_cache_root, prepare_data_root
from mcit_bench.data.run_data import load_stream_data
from mcit_bench.data.stream import load_stream
from mcit_bench.engine.train import batch_indices, lr_factor, stage_seed, train_stage
from mcit_bench.methods.base import RunContext, Stage, rows_of
from mcit_bench.methods.registry import build_method
from mcit_bench.models.collate import InstructionCollator
from mcit_bench.models.loading import load_model


def bare_loop(model, collator, data, config: TrainingConfig, steps: int, seed: int) -> float:
    """The loop a researcher would write by hand: AdamW, warm-up + cosine, clipping. Returns seconds."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    warmup = int(config.warmup_ratio * steps)
    model.train()
    started = time.perf_counter()
    for step, indices in enumerate(batch_indices(len(data), config.batch_size, steps, generator)):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_factor(step, steps, warmup, config.schedule)
        loss = model(**collator.train_batch(rows_of(data, indices))).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    run_config = RunConfig(method="seqft")
    stream = load_stream("synth-coin")
    cache = default_cache_root()
    train_sets, _ = load_stream_data(stream, prepare_data_root(stream, None, cache), cache)
    task = stream.tasks[2]  # ImageNet-like: the typical sequence length of the stream
    data = train_sets[task.name]
    config = TrainingConfig(steps_per_task=args.steps)
    base, processor = load_model("mcit-tiny")
    method = build_method(run_config)
    run = RunContext(stream=stream, seed=0, train_data=train_sets)
    model = method.setup(base, run)
    initial = copy.deepcopy(model.state_dict())
    collator = InstructionCollator(processor, processor.tokenizer.model_max_length)
    for indices in batch_indices(len(data), config.batch_size, args.steps,
                                 torch.Generator().manual_seed(stage_seed(0, 1))):
        collator.train_batch(rows_of(data, indices))  # warm the cache for both loops
    accelerator = Accelerator(cpu=True)
    stage = Stage(1, (task,))
    harness, bare = [], []
    for _ in range(args.rounds):
        model.load_state_dict(initial)
        stats = train_stage(model, method, stage, run, collator, config, None, accelerator)
        harness.append(stats.samples / stats.seconds)
        model.load_state_dict(initial)
        bare.append(args.steps * config.batch_size / bare_loop(model, collator, data, config, args.steps,
                                                                stage_seed(0, 1)))
    h, b = statistics.median(harness), statistics.median(bare)
    print(f"task {task.name}, batch {config.batch_size}, {args.steps} steps x {args.rounds} rounds, "
          f"{torch.get_num_threads()} threads")
    print(f"harness loop: {h:.1f} samples/s   bare PyTorch loop: {b:.1f} samples/s   ratio {h / b:.3f}")


if __name__ == "__main__":
    main()
