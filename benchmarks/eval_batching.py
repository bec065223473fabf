"""Batched evaluation against batch size 1, on the same test split, side by side.

Greedy generation with left padding and the KV cache, through the harness's own
``generate_answers``; a warm-up pass fills the collator cache first, so every batch size measures
generation alone. Prints samples per second at each batch size and the speed-up over batch size 1
(target: >= 5x at the default evaluation batch size), for mcit-tiny and for tiny random models of
the other backends' architectures (built locally from their configs, see
``mcit_bench.models.tiny_archs``).

    python benchmarks/eval_batching.py [--model all] [--task grounding] [--samples 100]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from mcit_bench.config import EvalConfig
from mcit_bench.data.prepare import default_cache_root, prepare_data_root
from mcit_bench.data.run_data import load_stream_data
from mcit_bench.data.stream import load_stream
from mcit_bench.engine.generate import generate_answers, test_rows
from mcit_bench.models.collate import InstructionCollator
from mcit_bench.models.loading import load_model
from mcit_bench.models.tiny_archs import build_tiny_internvl, build_tiny_qwen2_vl

BACKENDS: dict[str, Callable[[], tuple]] = {
    "mcit-tiny": lambda: load_model("mcit-tiny"),
    "qwen2-vl": lambda: build_tiny_qwen2_vl(0, "2"),
    "qwen2.5-vl": lambda: build_tiny_qwen2_vl(0, "2.5"),
    "internvl": lambda: build_tiny_internvl(0),
}


def measure(model, processor, rows: list[dict], sizes: list[int], max_new: int) -> tuple[dict[int, float], bool]:
    """Samples per second at each batch size, and whether every batch size gave the same answers."""
    collator = InstructionCollator(processor, processor.tokenizer.model_max_length)
    generate_answers(model, collator, rows, max(sizes), max_new)  # warm-up: caches and allocator
    speeds: dict[int, float] = {}
    outputs: dict[int, list[str]] = {}
    for size in sizes:
        started = time.perf_counter()
        outputs[size] = generate_answers(model, collator, rows, size, max_new)[0]
        speeds[size] = len(rows) / (time.perf_counter() - started)
    return speeds, all(outputs[size] == outputs[sizes[0]] for size in sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all", choices=[*BACKENDS, "all"])
    parser.add_argument("--task", default="grounding", help="the longest answers of the stream by default")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    args = parser.parse_args()

    stream = load_stream("synth-coin")
    cache = default_cache_root()
    _, test_sets = load_stream_data(stream, prepare_data_root(stream, None, cache), cache)
    rows = test_rows(test_sets[args.task])[: args.samples]
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    max_new = EvalConfig().max_new_tokens
    print(f"task {args.task}, {len(rows)} samples, max_new_tokens {max_new}, {torch.get_num_threads()} threads")
    for name in BACKENDS if args.model == "all" else [args.model]:
        model, processor = BACKENDS[name]()
        speeds, same = measure(model, processor, rows, sizes, max_new)
        print(f"{name} ({type(model).__name__}); identical answers at every batch size: {same}")
        for size, speed in speeds.items():
            print(f"  batch {size:>3}: {speed:7.1f} samples/s   x{speed / speeds[sizes[0]]:.1f} over batch {sizes[0]}")


if __name__ == "__main__":
    main()
