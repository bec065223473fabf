"""Tokens a method's training batches hold, padding included, as a ratio to seqft's: what a method
that mixes tasks in one batch (replay, joint) pays for padding each batch to its longest sample.

    python benchmarks/padded_tokens.py [--methods seqft,replay,joint] [--configs benchmarks/tuned-synth-coin]

No model runs. For each method, each stage draws the loop's own batches (the stage's seed, its step
budget and batch size) from the method's own ``train_data`` hook, calling ``after_task``
between stages as the loop does, and collates them with mcit-tiny's processor. Prints, per method, the
answer-and-prompt tokens, the tokens of the padded batches, their ratio (the padding overhead) and the
padded tokens as a ratio to the first method's. A method whose ``after_task`` reads the model (EWC,
KeepLoRA, ...) cannot run here: those train on seqft's data and batches anyway.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch

from mcit_bench.config import RunConfig, load_config_file, parse_run_config
from mcit_bench.data.prepare import default_cache_root
from mcit_bench.data.stream import TaskStream, load_stream
from mcit_bench.engine.run import load_stream_data, prepare_data_root
from mcit_bench.engine.train import batch_indices, stage_seed, stage_steps
from mcit_bench.methods.base import RunContext, rows_of
from mcit_bench.methods.registry import build_method
from mcit_bench.models.collate import InstructionCollator
from mcit_bench.models.loading import load_named_processor, model_config, sequence_limit


def method_config(method: str, configs: Path | None) -> RunConfig:
    """The method's run config: ``configs/<method>.yaml`` where it exists, else its defaults."""
    path = configs / f"{method}.yaml" if configs is not None else None
    if path is None or not path.is_file():
        return RunConfig(method=method)
    return parse_run_config(load_config_file(path), str(path))


@functools.cache
def training_data(sequence: str) -> tuple[TaskStream, dict]:
    """The stream and its tasks' training data, read once for every method that runs on it."""
    stream = load_stream(sequence)
    cache = default_cache_root()
    train, _ = load_stream_data(stream, prepare_data_root(stream, None, cache), cache, None)
    return stream, train


def batch_tokens(method_name: str, configs: Path | None, collator: InstructionCollator) -> tuple[int, int]:
    """(tokens, padded tokens) over every training batch of a run of ``method_name``."""
    config = method_config(method_name, configs)
    stream, train = training_data(config.sequence)
    run = RunContext(stream=stream, seed=config.seed, train_data=train, collator=collator)
    method = build_method(config)
    tokens = padded = 0
    for stage in method.stages(stream):
        data = method.train_data(stage, run)
        steps = stage_steps(config.training, stream.task_steps(), stage, len(data))
        generator = torch.Generator().manual_seed(stage_seed(config.seed, stage.index))
        for indices in batch_indices(len(data), config.training.batch_size, steps, generator):
            mask = collator.train_batch(rows_of(data, indices))["attention_mask"]
            tokens, padded = tokens + int(mask.sum()), padded + mask.numel()
        method.after_task(stage, run)
    return tokens, padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="seqft,replay,joint")
    parser.add_argument("--configs", type=Path, default=None)
    args = parser.parse_args()
    processor = load_named_processor("mcit-tiny")
    collator = InstructionCollator(processor, sequence_limit("mcit-tiny", model_config("mcit-tiny"),
                                                             processor.tokenizer))
    reference = None
    print(f"{'method':<10} {'tokens':>10} {'padded':>10} {'padded/tokens':>14} {'padded vs first':>16}")
    for method in args.methods.split(","):
        tokens, padded = batch_tokens(method, args.configs, collator)
        reference = reference or padded
        print(f"{method:<10} {tokens:>10,} {padded:>10,} {padded / tokens:>14.3f} {padded / reference:>16.3f}",
              flush=True)


if __name__ == "__main__":
    main()
