"""Pre-train mcit-tiny on the description mix, so that the stream's tasks are new to it.

The committed weights under ``mcit_bench/models/mcit_tiny`` were produced by the command recorded in
their ``pretraining.json`` (``mcit-bench pretrain-tiny``); with the same seed, steps and package
versions it reproduces them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mcit_bench.data.synthetic import pretraining_sample
from mcit_bench.models.collate import InstructionCollator
from mcit_bench.models.tiny import TinyShape, build_tiny

if TYPE_CHECKING:
    from mcit_bench.models.guide import GuidePretrainConfig


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 0
    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0


def pretraining_rows(rng: np.random.Generator, count: int) -> list[dict]:
    rows = []
    for _ in range(count):
        image, prompt, target = pretraining_sample(rng)
        rows.append({"image": image, "instruction": prompt, "target": target})
    return rows


def lr_at(step: int, config: PretrainConfig | GuidePretrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain(config: PretrainConfig, out_dir: Path, log_every: int = 100) -> dict:
    """Train every weight of a fresh mcit-tiny on descriptions; save it to ``out_dir``."""
    torch.manual_seed(config.seed)
    model, processor = build_tiny(config.seed, TinyShape())
    collator = InstructionCollator(processor, processor.tokenizer.model_max_length)
    rng = np.random.default_rng(config.seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        batch = collator.train_batch(pretraining_rows(rng, config.batch_size))
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            recent = sum(losses[-log_every:]) / log_every
            elapsed = time.perf_counter() - started
            print(f"step {step + 1}/{config.steps} loss {recent:.4f} ({elapsed:.0f} s)", flush=True)
    record = {
        "command": f"mcit-bench pretrain-tiny --seed {config.seed} --steps {config.steps}",
        "config": asdict(config),
        "shape": asdict(TinyShape()),
        "final_loss": sum(losses[-100:]) / min(100, len(losses)),
        "seconds": round(time.perf_counter() - started, 1),
        "versions": {"torch": torch.__version__, "transformers": _version("transformers")},
    }
    save_model_dir(model, processor, out_dir, record)
    return record


def save_model_dir(model, processor, out_dir: Path, record: dict) -> None:
    """Write the model folder next to its destination, then swap it in whole."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mcit-tiny-", dir=out_dir.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "pretraining.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
