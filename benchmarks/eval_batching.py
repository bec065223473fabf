"""Batched evaluation against batch size 1, on the same test split, side by side.

Greedy generation with left padding and the KV cache; the collator cache is warmed first so both
measure generation alone. Prints samples per second at each batch size and the speed-up over
batch size 1 (target: >= 5x at the default evaluation batch size).

    python benchmarks/eval_batching.py [--task grounding] [--samples 100]
"""

from __future__ import annotations

import argparse
import time

import torch

from mcit_bench.config import EvalConfig
from mcit_bench.data.stream import load_stream
from mcit_bench.evaluate import generate_answers, test_rows
from mcit_bench.models.collate import InstructionCollator
from mcit_bench.models.loading import load_model
from mcit_bench.runner import default_cache_root, load_stream_data, prepare_data_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="grounding", help="the longest answers of the stream by default")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    args = parser.parse_args()

    stream = load_stream("synth-coin")
    cache = default_cache_root()
    _, test_sets = load_stream_data(stream, prepare_data_root(stream, None, cache), cache)
    rows = test_rows(test_sets[args.task])[: args.samples]
    model, processor = load_model("mcit-tiny")
    collator = InstructionCollator(processor)
    max_new = EvalConfig().max_new_tokens
    generate_answers(model, collator, rows, 64, max_new)  # warm-up: caches and allocator
    speeds: dict[int, float] = {}
    outputs: dict[int, list[str]] = {}
    for size in (int(s) for s in args.batch_sizes.split(",")):
        started = time.perf_counter()
        outputs[size] = generate_answers(model, collator, rows, size, max_new)[0]
        speeds[size] = len(rows) / (time.perf_counter() - started)
    same = all(outputs[size] == outputs[1] for size in outputs)
    print(f"task {args.task}, {len(rows)} samples, max_new_tokens {max_new}, {torch.get_num_threads()} threads")
    for size, speed in speeds.items():
        print(f"batch {size:>3}: {speed:7.1f} samples/s   x{speed / speeds[1]:.1f} over batch 1")
    print(f"identical answers at every batch size: {same}")


if __name__ == "__main__":
    main()
