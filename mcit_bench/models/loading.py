"""Load a model and its processor by name: the packaged ``mcit-tiny`` or any Hugging Face id or folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mcit_bench.errors import ConfigError
from mcit_bench.models.tiny import packaged_path
from mcit_bench.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    path: Path | None  # a local folder, or None for a hub id loaded as named


MODELS: Registry[ModelEntry] = Registry("model")
MODELS.add("mcit-tiny", ModelEntry(
    "mcit-tiny", "embedded 1.7M-parameter LLaVA (CLIP vision, Llama text), pre-trained on descriptions",
    packaged_path()))


def resolve_model_path(name: str) -> str:
    """A registered name maps to its folder; anything else is passed to ``from_pretrained`` as is."""
    if name in MODELS:
        entry = MODELS.get(name)
        return str(entry.path) if entry.path is not None else entry.name
    return name


def _loading(name: str, load):
    """Run ``load(path)`` for a model name; any failure becomes one sentence naming the model."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    path = resolve_model_path(name)
    if not os.path.isdir(path) and ("/" not in path or path.startswith((".", os.sep))):
        raise ConfigError(f"model {name!r} is neither a registered model ({', '.join(MODELS.names())}), "
                          f"a folder, nor a hub id; pass one of those to --model")
    try:
        return load(path)
    except (OSError, ValueError) as error:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = ("it is not in the local Hugging Face cache and HF_HUB_OFFLINE=1" if offline
                else "download it first (huggingface-cli download) or pass a local folder")
        raise ConfigError(f"model {name!r} cannot be loaded ({str(error).splitlines()[0]}); {hint}") from None


def check_model(name: str) -> None:
    """Fail fast, before anything is written: the model's config must load (a small file, no weights)."""
    from transformers import AutoConfig

    _loading(name, AutoConfig.from_pretrained)


PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


def compute_precision(precision: str, device: torch.device):
    """The context the model computes in: bf16 autocast for bf16 runs (float32 adapters meet
    bfloat16 weights in bfloat16 products), nothing for fp32."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def load_model(name: str, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, object]:
    """(model, processor) for a registered name, a local folder or a hub id (offline-safe)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor, model = _loading(name, lambda path: (AutoProcessor.from_pretrained(path),
                                                    AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)))
    if getattr(processor, "tokenizer", None) is not None and processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return model, processor


def language_model(model: nn.Module) -> nn.Module:
    """The decoder stack of a vision-language model (without its LM head)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None:
        raise ConfigError(f"{type(model).__name__} exposes no language model (get_decoder); it cannot be adapted")
    return decoder


def projector(model: nn.Module) -> nn.Module:
    """The vision-language projector (LLaVA's ``multi_modal_projector``)."""
    for module_name, module in model.named_modules():
        if module_name.endswith("multi_modal_projector"):
            return module
    raise ConfigError(f"{type(model).__name__} has no vision-language projector this harness knows")


def vision_tower(model: nn.Module) -> nn.Module:
    for module_name, module in model.named_modules():
        if module_name.endswith("vision_tower"):
            return module
    raise ConfigError(f"{type(model).__name__} has no vision tower this harness knows")
