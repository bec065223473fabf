"""Load a model and its processor by name: the packaged ``mcit-tiny`` or any Hugging Face id or folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mcit_bench.core.errors import ConfigError
from mcit_bench.core.registry import Registry
from mcit_bench.core.shipped import TINY_NAME, packaged_tiny_folder


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    path: Path | None  # a local folder, or None for a hub id loaded as named


MODELS: Registry[ModelEntry] = Registry("model")
MODELS.add(TINY_NAME, ModelEntry(
    TINY_NAME, "embedded 1.7M-parameter LLaVA (CLIP vision, Llama text), pre-trained on descriptions",
    packaged_tiny_folder()))


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
        if os.environ.get("HF_HUB_OFFLINE") == "1" and not os.path.isdir(path):
            raise ConfigError(f"model {name!r} is not a folder and not in the local Hugging Face cache; download "
                              f"it first (huggingface-cli download {name}) or pass a local folder (mcit-bench "
                              f"does not download unless HF_HUB_OFFLINE=0)") from None
        raise ConfigError(f"model {name!r} cannot be loaded ({str(error).splitlines()[0]}); download it first "
                          f"(huggingface-cli download) or pass a local folder") from None


PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


def compute_precision(precision: str, device: torch.device):
    """The context the model computes in: bf16 autocast for bf16 runs (float32 adapters meet
    bfloat16 weights in bfloat16 products), nothing for fp32."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def images_only(processor_class: type) -> type:
    """``processor_class`` without its video processor slot.

    Qwen2-VL-style processors take a video processor, and transformers builds video processors on
    torchvision only; the harness feeds images alone, so where torchvision is not installed (CPU
    machines, where only CUDA builds of it may be on offer) the processor is built without that slot.
    """

    def get_attributes(cls) -> list[str]:
        # the processor mixin pairs the parts it is given with these names, so the video processor
        # slot the parent passes on (None) is dropped instead of checked against a missing class
        return [name for name in processor_class.get_attributes() if name != "video_processor"]

    # the same name, so a saved folder still names the real class and loads anywhere
    return type(processor_class.__name__, (processor_class,), {"get_attributes": classmethod(get_attributes)})


def processor_class_name(path: str) -> str | None:
    """The processor class a model folder or cached hub id names, if any."""
    import json

    from transformers.utils import cached_file

    for filename in ("processor_config.json", "preprocessor_config.json"):
        found = cached_file(path, filename, _raise_exceptions_for_missing_entries=False)
        if found:
            name = json.loads(Path(found).read_text()).get("processor_class")
            if name:
                return name
    return None


def load_processor(path: str):
    """AutoProcessor, or the images-only variant of the model's processor when torchvision is missing."""
    import transformers
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    try:
        return AutoProcessor.from_pretrained(path)
    except (AttributeError, ImportError, OSError, TypeError, ValueError) as error:
        if is_torchvision_available():
            raise
        try:
            name = processor_class_name(path)
        except OSError:
            raise error from None
        processor_class = getattr(transformers, name, None) if name else None
        if processor_class is None or "video_processor" not in processor_class.get_attributes():
            raise
        return images_only(processor_class).from_pretrained(path)


def load_model(name: str, dtype: torch.dtype = torch.float32,
               device: torch.device | None = None) -> tuple[nn.Module, object]:
    """(model, processor) for a registered name, a local folder or a hub id (offline-safe). With
    ``device`` the weights are read straight onto it, never held whole in host memory first."""
    return load_weights(name, dtype, device), load_named_processor(name)


def load_named_processor(name: str):
    """The model's processor, its tokenizer given a padding token (the end-of-sequence one) if it has none."""
    processor = _loading(name, load_processor)
    if getattr(processor, "tokenizer", None) is not None and processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


def load_weights(name: str, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> nn.Module:
    from transformers import AutoModelForImageTextToText

    placement = {} if device is None or device.type == "cpu" else {"device_map": {"": device}}
    return _loading(name, lambda path: AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, **placement))


def model_config(name: str):
    """The model's config (a small file, no weights): loading it fails fast, before anything is written."""
    from transformers import AutoConfig

    return _loading(name, AutoConfig.from_pretrained)


# LLaVA-1.5 was instruction-tuned on sequences of at most 2048 tokens, and CoIN trains it so
# (``--model_max_length 2048``, CoIN scripts/CoIN/Train/2_TextVQA.sh:41, as in every task's script);
# its hub config allows 4096 positions and its tokenizer names no limit
TRAINED_LENGTHS = {"llava": 2048}
# transformers writes a sentinel of about 1e30 into a tokenizer that names no limit
UNSET_LENGTH = 10**9


def sequence_limit(name: str, config: Any, tokenizer: Any) -> int:
    """The longest training sequence a model takes: the least of its tokenizer's ``model_max_length``,
    its language model's ``max_position_embeddings`` and the length its family was tuned at."""
    limits = []
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < UNSET_LENGTH:
        limits.append(tokenizer_limit)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    positions = getattr(text, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    if getattr(config, "model_type", None) in TRAINED_LENGTHS:
        limits.append(TRAINED_LENGTHS[config.model_type])
    if not limits:
        raise ConfigError(f"model {name!r} names no sequence length limit (no model_max_length in its tokenizer, "
                          f"no max_position_embeddings in its config); pass --max-length N")
    return min(limits)


UNKNOWN_WORDS_WARNING = 0.2  # a task whose words the tokenizer maps to its unknown token this often


def unknown_word_share(tokenizer: Any, texts: list[str]) -> tuple[float, list[str]]:
    """The share of the words of ``texts`` that the tokenizer maps (in part) to its unknown token,
    and the first few such words; (0, []) for tokenizers that have none (byte-level BPE)."""
    unknown_id = getattr(tokenizer, "unk_token_id", None)
    words = [word for text in texts for word in text.split()]
    if unknown_id is None or not words:
        return 0.0, []
    encoded = tokenizer(words, add_special_tokens=False)["input_ids"]
    unknown = [word for word, ids in zip(words, encoded) if unknown_id in ids]
    return len(unknown) / len(words), list(dict.fromkeys(unknown))[:5]


def unreadable_tasks(tokenizer: Any, train_sets: dict[str, Any], samples: int = 200) -> list[str]:
    """One warning per task whose text the model's tokenizer cannot read (mcit-tiny, whose vocabulary
    is synth-coin's, on real text): such a run can only score near zero, and should say so first."""
    warnings = []
    for task, dataset in train_sets.items():
        rows = dataset.select(range(min(samples, len(dataset))))
        share, examples = unknown_word_share(tokenizer, [f"{row['instruction']} {row['target']}" for row in rows])
        if share > UNKNOWN_WORDS_WARNING:
            warnings.append(f"warning: the model's tokenizer maps {share:.0%} of task {task!r}'s words to its unknown "
                            f"token (e.g. {', '.join(examples)}); it can hardly read this task and will score near "
                            f"zero: use a model whose vocabulary covers the data")
    return warnings
