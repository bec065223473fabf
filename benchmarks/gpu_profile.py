"""Every method's training step on a real-size model built from its config with random weights.

    python benchmarks/gpu_profile.py --model llava-1.5-7b [--methods seqft,moelora] [--steps 10]
    torchrun --nproc_per_node 8 benchmarks/gpu_profile.py --model llava-1.5-13b --shard fsdp
    python benchmarks/gpu_profile.py --model tiny --device cpu --steps 2 --batch 2   # the suite's check

Nothing is downloaded: LLaVA-1.5-7B and -13B (llava-hf's configs, as docs/DISTRIBUTED.md's table) and
Qwen2.5-VL-7B (Qwen/Qwen2.5-VL-7B-Instruct's config.json) are built from their configs in bfloat16 on
the device, with the tokenizer and image processor of the tiny model of the same architecture (real
image sizes: 576 image tokens a LLaVA sample). ``tiny`` is the tiny LLaVA-1.5 itself. Each method
trains ``--steps`` steps of synth-coin's first task (the ``ci`` subset's data) in bf16 with gradient
checkpointing, through the harness's own training loop, and the script prints per method: milliseconds
a step, tokens a second (all processes), peak memory against docs/DISTRIBUTED.md's formula
(mcit_bench/engine/memory.py) for the same workload, and model FLOPs utilisation against the device's
peak bf16 rate where the device is known. Model FLOPs: 6 x the language model's parameters per token
(forward and backward, the PaLM convention; LoRA's frozen weights skip their weight gradients, so the
hardware does less) plus 2 x the vision tower's per image patch (it runs forward only), the first step
left out as warm-up.

Before it allocates anything it checks the device: a CUDA model on a machine without one, a real-size
model on the CPU, or a training peak (by the formula) above the device's memory stops in one sentence
with the estimate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# (name of the chip in torch.cuda.get_device_name, dense bf16 peak in FLOP/s, from the vendors' data sheets)
PEAK_BF16 = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12), ("A6000", 155e12))
REAL_MODELS = ("llava-1.5-7b", "llava-1.5-13b", "qwen2.5-vl-7b")
MODELS = REAL_MODELS + ("tiny",)
LORA_RANK = 128  # CoIN's, for the memory estimate (mcit_bench/engine/memory.py)


class ProfileError(Exception):
    """A profile that cannot run here: one sentence, printed, exit status 2."""


@dataclass(frozen=True)
class Built:
    model: nn.Module
    processor: object
    vision_patches: int  # patches the vision tower runs per image


def qwen25_vl_7b_config(tokenizer) -> object:
    """Qwen/Qwen2.5-VL-7B-Instruct's config.json: a Qwen2.5-7B (hidden 3584, 28 layers, 28 heads, 4
    key-value heads, vocabulary 152064) and the default 32-block vision tower of width 1280."""
    import transformers

    from mcit_bench.models.tiny_archs import qwen_token_ids

    text = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
                tie_word_embeddings=False)
    return transformers.Qwen2_5_VLConfig(text_config=text, vision_config={"hidden_size": 1280, "in_chans": 3},
                                         **qwen_token_ids(tokenizer))


def model_config(name: str):
    """The config and the processor of ``name`` (the processor of its tiny architecture)."""
    from mcit_bench.models.tiny_archs import build_tiny_llava15, build_tiny_qwen2_vl

    if name.startswith("llava") or name == "tiny":
        tiny, processor = build_tiny_llava15(0)
        if name == "tiny":
            return tiny.config, processor
        from mcit_bench.engine.memory import llava15_on_meta

        config = llava15_on_meta(name.split("-")[-1]).config
        config.image_token_index = tiny.config.image_token_index
        return config, processor
    _, processor = build_tiny_qwen2_vl(0, version="2.5")
    return qwen25_vl_7b_config(processor.tokenizer), processor


def build(name: str, device: torch.device) -> Built:
    from transformers import AutoModelForImageTextToText

    config, processor = model_config(name)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    vision = config.vision_config
    side = getattr(vision, "image_size", 448)
    patches = (side // vision.patch_size) ** 2
    return Built(model, processor, patches)


def estimated_peak(name: str, workload, processes: int) -> int:
    """docs/DISTRIBUTED.md's training peak (bytes a process) of seqft's rank-128 LoRA on ``name``,
    computed on the meta device."""
    from transformers import AutoModelForImageTextToText

    from mcit_bench.adapters.lora import inject_lora, unfreeze_projector
    from mcit_bench.engine.memory import memory_terms, peaks

    config, _ = model_config(name)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    base = {id(p) for p in model.parameters()}
    model = inject_lora(model, LORA_RANK, 2.0 * LORA_RANK, 0.0)
    unfreeze_projector(model)
    keep = {p for p in model.parameters() if id(p) not in base or p.requires_grad}
    return peaks(memory_terms(model, keep, processes, workload))["training peak"]


def check_device(name: str, device: torch.device, workload, processes: int) -> int:
    """The estimate, or a one-sentence refusal before anything is allocated."""
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ProfileError("--device cuda was asked for but this machine has no CUDA device; run it on a GPU "
                           "machine, or check the script on the CPU with --model tiny --device cpu")
    if device.type == "cpu" and name != "tiny":
        raise ProfileError(f"{name} is a real-size model and the device is the CPU; profile it on a GPU "
                           f"(--device cuda), or check the script with --model tiny --device cpu")
    estimate = estimated_peak(name, workload, processes)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        if estimate > total:
            raise ProfileError(f"{name} needs about {estimate / 1e9:.1f} GB a process by docs/DISTRIBUTED.md's "
                               f"formula ({workload.micro_batch} samples of {workload.sequence} tokens), and "
                               f"{torch.cuda.get_device_name(device)} has {total / 1e9:.1f} GB; use --shard fsdp "
                               f"over more GPUs, or a smaller --batch")
    return estimate


def device_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    chip = torch.cuda.get_device_name(device)
    return next((rate for key, rate in PEAK_BF16 if key in chip), None)


def language_and_vision_params(model: nn.Module) -> tuple[int, int]:
    from mcit_bench.models.anatomy import language_model, vision_tower

    return (sum(p.numel() for p in language_model(model).parameters()),
            sum(p.numel() for p in vision_tower(model).parameters()))


def profile_method(method_name: str, args, device: torch.device, accelerator, data, estimate: int) -> dict:
    from mcit_bench.config import RunConfig, TrainingConfig
    from mcit_bench.engine.environment import peak_memory_mb, reset_peak_memory
    from mcit_bench.engine.sharding import shard_model
    from mcit_bench.engine.train import train_stage
    from mcit_bench.methods.base import RunContext
    from mcit_bench.methods.registry import build_method
    from mcit_bench.models.blank_image import install_blank_image
    from mcit_bench.models.collate import InstructionCollator
    from mcit_bench.models.guide import TINY_GUIDE, GuideEncoder

    stream, train_sets = data
    built = build(args.model, device)
    collator = InstructionCollator(built.processor, args.max_length)
    method = build_method(RunConfig(method=method_name, sequence="synth-coin", subset="ci"))
    guide = GuideEncoder(TINY_GUIDE, device) if method.capabilities.needs_guide else None
    run = RunContext(stream=stream, seed=0, train_data=train_sets, device=device, collator=collator, guide=guide)
    base = {id(p) for p in built.model.parameters()}
    model = method.setup(built.model, run).to(device)
    if args.shard == "fsdp":
        keep = {p for p in model.parameters() if id(p) not in base or p.requires_grad}
        model = shard_model(model, accelerator, "bf16", keep)
    install_blank_image(model, collator.blank_image(), device)
    stage = method.stages(stream)[0]
    method.before_task(stage, run)
    first = stage.tasks[0].name
    rows = [train_sets[first][i] for i in range(args.batch)]
    tokens_per_sample = float(collator.train_batch(rows)["attention_mask"].sum()) / len(rows)
    precision = "fp32" if device.type == "cpu" else "bf16"
    training = TrainingConfig(batch_size=args.batch * accelerator.num_processes, gradient_checkpointing=True)
    train_stage(model, method, stage, run, collator, training, {first: 1}, accelerator, precision=precision,
                sharded=args.shard == "fsdp")  # warm-up: kernels, allocator, caches
    reset_peak_memory()
    started = time.perf_counter()
    train_stage(model, method, stage, run, collator, training, {first: args.steps}, accelerator,
                precision=precision, sharded=args.shard == "fsdp")
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / args.steps
    language, vision = language_and_vision_params(model)
    samples = args.batch * accelerator.num_processes
    tokens = samples * tokens_per_sample
    flops = 6 * language * tokens + 2 * vision * built.vision_patches * samples
    peak_rate = device_peak_flops(device)
    mfu = flops / seconds / (peak_rate * accelerator.num_processes) if peak_rate else None
    return {"method": method_name, "ms_per_step": 1000 * seconds, "tokens_per_s": tokens / seconds,
            "peak_gb": peak_memory_mb() * 2**20 / 1e9, "formula_gb": estimate / 1e9,
            "mfu": mfu, "tokens_per_sample": tokens_per_sample}


def main(argv: list[str] | None = None) -> int:
    from accelerate import Accelerator

    from mcit_bench.core.errors import UserError
    from mcit_bench.data.prepare import prepare_data_root
    from mcit_bench.data.run_data import load_stream_data
    from mcit_bench.data.stream import load_stream
    from mcit_bench.engine.environment import device_description
    from mcit_bench.engine.memory import Workload
    from mcit_bench.methods.registry import METHODS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="llava-1.5-7b")
    parser.add_argument("--methods", default=",".join(name for name in METHODS.names() if name != "joint"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4, help="samples a process a step")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--shard", choices=("fsdp",), default=None)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    accelerator = Accelerator(cpu=args.device == "cpu")
    device = accelerator.device
    try:
        methods = [name.strip() for name in args.methods.split(",") if name.strip()]
        unknown = [name for name in methods if name not in METHODS.names()]
        if unknown:
            raise ProfileError(f"unknown method {unknown[0]!r}; known: {', '.join(METHODS.names())}")
        if args.steps < 1 or args.batch < 1:
            raise ProfileError("--steps and --batch must be at least 1")
        workload = Workload(micro_batch=args.batch, sequence=700, eval_batch=args.batch, eval_tokens=724)
        estimate = check_device(args.model, device, workload, accelerator.num_processes)
        stream = load_stream("synth-coin", subset="ci")
        cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="gpu-profile-"))
        train_sets, _ = load_stream_data(stream, prepare_data_root(stream, None, cache), cache)
        rows = [profile_method(name, args, device, accelerator, (stream, train_sets), estimate) for name in methods]
    except (ProfileError, UserError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if accelerator.is_main_process:
        print(f"{args.model} on {device_description()}, {accelerator.num_processes} process(es)"
              f"{', --shard fsdp' if args.shard else ''}, {args.batch} samples a process, {args.steps} steps, "
              f"bf16 with gradient checkpointing" if device.type == "cuda" else
              f"{args.model} on {device_description()}, fp32 (the CPU check)")
        print("| method | ms/step | tokens/s | peak GB | formula GB | MFU |")
        print("|---|---:|---:|---:|---:|---:|")
        for row in rows:
            mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "n/a"
            print(f"| {row['method']} | {row['ms_per_step']:.0f} | {row['tokens_per_s']:.0f} | {row['peak_gb']:.2f} | "
                  f"{row['formula_gb']:.2f} | {mfu} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
