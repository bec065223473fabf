"""Where a method's training step and its evaluation spend their time, as shares (torch.profiler).

    python benchmarks/profile_method.py dmole [--steps 6] [--top 8]

(Not profile.py: run as a script, that name would shadow the standard library's profile module,
which torch and transformers import.)

Trains the method on synth-coin's first two tasks (the ``ci`` subset) on mcit-tiny through the
harness's own loop, profiling the last ``--steps`` steps of the second task (by then a continual method
has its old-task machinery running: routers, teachers, penalties), then one evaluation batch of the
first task. Prints, per phase, the shares of the profiled wall time taken by the method's own hooks
(``before_step``, ``loss``, ``route``; each wrapped in a record_function), the backward pass, the
optimiser step and the rest (the forward pass, batching, the loop), and the operators with the largest
own time. Run it alone: two torch jobs on two cores slow each other about tenfold.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

HOOKS = ("before_step", "loss", "route")


def wrap_hooks(method) -> None:
    """Each hook of ``method`` inside a record_function named ``method.<hook>``."""
    for hook in HOOKS:
        original = getattr(method, hook)

        @functools.wraps(original)
        def timed(*args, _original=original, _hook=hook, **kwargs):
            with record_function(f"method.{_hook}"):
                return _original(*args, **kwargs)

        setattr(method, hook, timed)


def shares(prof, wall_us: float, top: int) -> list[str]:
    """Lines: each phase's share of ``wall_us``, then the ``top`` operators by own time."""
    phases: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.name.startswith("method."):
            phases[event.name] += event.cpu_time_total
        elif event.name.startswith("Optimizer.step"):
            phases["optimiser step"] += event.cpu_time_total
        elif event.name.startswith("autograd::engine::evaluate_function"):
            phases["backward"] += event.self_cpu_time_total + sum(child.cpu_time_total for child in event.cpu_children)
    lines = [f"  {name:<24} {100 * value / wall_us:5.1f}%" for name, value in sorted(phases.items())]
    lines.append(f"  {'rest (forward, loop)':<24} {100 * max(0.0, wall_us - sum(phases.values())) / wall_us:5.1f}%")
    averages = sorted(prof.key_averages(), key=lambda item: item.self_cpu_time_total, reverse=True)
    lines += [f"    {item.key[:48]:<48} {100 * item.self_cpu_time_total / wall_us:5.1f}% own"
              for item in averages[:top]]
    return lines


def main(argv: list[str] | None = None) -> int:
    import time

    from accelerate import Accelerator

    from mcit_bench.config import RunConfig, TrainingConfig
    from mcit_bench.data.prepare import prepare_data_root
    from mcit_bench.data.run_data import load_stream_data
    from mcit_bench.data.stream import load_stream
    from mcit_bench.engine.generate import generate_answers, test_rows
    from mcit_bench.engine.train import train_stage
    from mcit_bench.methods.base import RunContext
    from mcit_bench.methods.registry import METHODS, build_method
    from mcit_bench.models.blank_image import install_blank_image
    from mcit_bench.models.collate import InstructionCollator
    from mcit_bench.models.guide import TINY_GUIDE, GuideEncoder
    from mcit_bench.models.loading import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", help=f"one of {', '.join(METHODS.names())}")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.method not in METHODS.names():
        print(f"error: unknown method {args.method!r}; known: {', '.join(METHODS.names())}", file=sys.stderr)
        return 2
    stream = load_stream("synth-coin", subset="ci")
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="profile-"))
    train_sets, test_sets = load_stream_data(stream, prepare_data_root(stream, None, cache), cache)
    torch.manual_seed(0)
    model, processor = load_model("mcit-tiny")
    collator = InstructionCollator(processor, processor.tokenizer.model_max_length)
    method = build_method(RunConfig(method=args.method, sequence="synth-coin", subset="ci"))
    guide = GuideEncoder(TINY_GUIDE) if method.capabilities.needs_guide else None
    run = RunContext(stream=stream, seed=0, train_data=train_sets, collator=collator, guide=guide)
    model = method.setup(model, run)
    install_blank_image(model, collator.blank_image(), torch.device("cpu"))
    wrap_hooks(method)
    accelerator = Accelerator(cpu=True)
    config = TrainingConfig(batch_size=8)
    stages = method.stages(stream)[:2]
    first = stages[0]
    for stage in stages:
        method.before_task(stage, run)
        task = stage.tasks[0].name
        last = stage is stages[-1]
        if not last:
            train_stage(model, method, stage, run, collator, config, {task: 20}, accelerator)
        else:
            train_stage(model, method, stage, run, collator, config, {task: 2}, accelerator)  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                started = time.perf_counter()
                train_stage(model, method, stage, run, collator, config, {task: args.steps}, accelerator)
                wall = (time.perf_counter() - started) * 1e6
            print(f"{args.method}: training, {args.steps} steps of 8 samples, {wall / 1e3 / args.steps:.0f} ms a step")
            print("\n".join(shares(prof, wall, args.top)))
        method.after_task(stage, run)
    rows = test_rows(test_sets[first.tasks[0].name])[:16]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        generate_answers(model, collator, rows, batch_size=16, max_new_tokens=24, method=method, run=run)
        wall = (time.perf_counter() - started) * 1e6
    print(f"{args.method}: evaluation, one batch of {len(rows)} prompts, {wall / 1e3:.0f} ms")
    print("\n".join(shares(prof, wall, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
