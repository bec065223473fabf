"""The guidance encoder: a CLIP beside the model under training, frozen, that gives a sample's image and
instruction features; methods that choose their task-specific parameters from CLIP similarities
(HiDe-LLaVA, ModalPrompt, DISCO, SMoLoRA, SAME) read it. The official code of those methods loads
``openai/clip-vit-large-patch14-336``; here any local CLIP folder or cached hub id loads with
transformers' CLIP classes, and the embedded default, ``mcit-tiny-guide``, is a tiny CLIP pre-trained
contrastively on synth-coin's images and instructions by ``mcit-bench pretrain-guide`` (its
``pretraining.json`` records how), so everything runs offline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mcit_bench.core.errors import ConfigError
from mcit_bench.core.io import weights_fingerprint
from mcit_bench.core.shipped import packaged_tiny_folder

TINY_GUIDE = "mcit-tiny-guide"


def packaged_guide_folder() -> Path:
    return Path(__file__).resolve().parent / "mcit_tiny_guide"


@dataclass(frozen=True)
class GuideShape:
    """The tiny CLIP's architecture; changing it changes the committed weights."""

    image_size: int = 64
    patch_size: int = 16
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    projection: int = 64
    max_text: int = 96  # synth-coin's longest instruction is 70 of mcit-tiny's word pieces


@dataclass(frozen=True)
class GuidePretrainConfig:
    seed: int = 0
    steps: int = 800
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1


def guide_tokenizer():
    """mcit-tiny's word-piece tokenizer (it knows every word of synth-coin), padding on the right so that
    a text's features never depend on the batch it is encoded in (CLIP's causal text tower pools its
    end-of-text token)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(packaged_tiny_folder())
    tokenizer.padding_side = "right"
    return tokenizer


def guide_image_processor(shape: GuideShape):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": shape.image_size},
                                 crop_size={"height": shape.image_size, "width": shape.image_size},
                                 do_center_crop=True, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def build_tiny_guide(seed: int, shape: GuideShape | None = None):
    """An untrained tiny CLIP: (model, tokenizer, image processor), deterministic from ``seed``."""
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    shape = shape or GuideShape()
    tokenizer = guide_tokenizer()
    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=shape.hidden, intermediate_size=shape.hidden * 4,
                          num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                          max_position_embeddings=shape.max_text, pad_token_id=tokenizer.pad_token_id,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = CLIPVisionConfig(hidden_size=shape.hidden, intermediate_size=shape.hidden * 4,
                              num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                              image_size=shape.image_size, patch_size=shape.patch_size)
    torch.manual_seed(seed)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=shape.projection)
    return CLIPModel(config), tokenizer, guide_image_processor(shape)


def resolve_guide_path(name: str) -> str:
    return str(packaged_guide_folder()) if name == TINY_GUIDE else name


class GuideEncoder:
    """A frozen CLIP's unit-length image and instruction features of samples, each computed once per
    sample id (a method reads them at every step, and again for prototypes and at evaluation)."""

    def __init__(self, name: str, device: torch.device | None = None) -> None:
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, CLIPModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        path = resolve_guide_path(name)
        try:
            kind = AutoConfig.from_pretrained(path).model_type
            if kind != "clip":  # CLIPModel would load any config, with fresh random weights
                raise ValueError(f"it is a {kind} model, not a CLIP")
            self.model = CLIPModel.from_pretrained(path).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.image_processor = AutoImageProcessor.from_pretrained(path)
        except (OSError, ValueError, TypeError) as error:
            raise ConfigError(f"guide encoder {name!r} cannot be loaded as a CLIP ({str(error).splitlines()[0]}); "
                              f"pass a local CLIP folder, a CLIP in the Hugging Face cache, or {TINY_GUIDE}") from None
        self.tokenizer.padding_side = "right"
        self.model.requires_grad_(False)
        self.device = device or torch.device("cpu")
        self.model.to(self.device)
        self.name = name
        self.fingerprint = weights_fingerprint(Path(path)) if Path(path).is_dir() else None
        self.max_text = self.model.config.text_config.max_position_embeddings
        self._cache: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def width(self) -> int:
        """The width of its (image and instruction) features."""
        return self.model.config.projection_dim

    def record(self) -> dict[str, Any]:
        """What results record of the encoder: its name and the sha256 of its weights."""
        return {"name": self.name, "weights": self.fingerprint}

    @torch.no_grad()
    def encode(self, images: Sequence[Image.Image], texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-length (image features, text features), one row per sample, on the CPU in float32."""
        pixels = self.image_processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        words = self.tokenizer([text + self.tokenizer.eos_token for text in texts], padding=True, truncation=True,
                               max_length=self.max_text, add_special_tokens=False, return_tensors="pt")
        image = self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device))
        text = self.model.get_text_features(input_ids=words["input_ids"].to(self.device),
                                            attention_mask=words["attention_mask"].to(self.device))
        image = getattr(image, "pooler_output", image)
        text = getattr(text, "pooler_output", text)
        return (torch.nn.functional.normalize(image.float(), dim=-1).cpu(),
                torch.nn.functional.normalize(text.float(), dim=-1).cpu())

    def features(self, rows: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode`` of rows as the model sees them (``image``: a file, or "" for a text-only sample;
        ``instruction``), each distinct row computed once: the encoder is frozen, so its features never
        change. Keyed by the row's content, never its id (an id may name the task)."""
        keys = [(str(row["image"]), str(row["instruction"])) for row in rows]
        missing = list(dict.fromkeys(key for key in keys if key not in self._cache))
        if missing:
            images = [Image.open(path) if path else self.blank_image() for path, _ in missing]
            image, text = self.encode(images, [instruction for _, instruction in missing])
            for row, key in enumerate(missing):
                self._cache[key] = (image[row], text[row])
        return (torch.stack([self._cache[key][0] for key in keys]),
                torch.stack([self._cache[key][1] for key in keys]))

    def blank_image(self) -> Image.Image:
        """What a text-only sample shows the encoder: a black square, as the model's blank image."""
        size = self.model.config.vision_config.image_size
        return Image.new("RGB", (size, size))


def pretraining_pairs(rng: np.random.Generator, count: int) -> tuple[list[Image.Image], list[str]]:
    """Images and instructions of synth-coin's tasks, generated afresh: each task as often as another."""
    from mcit_bench.data.synthetic import TASKS

    names = sorted(TASKS)
    samples = [TASKS[names[int(rng.integers(len(names)))]].generate(rng) for _ in range(count)]
    return [sample.image for sample in samples], [sample.instruction for sample in samples]


def pretrain_guide(config: GuidePretrainConfig, out_dir: Path, log_every: int = 100) -> dict[str, Any]:
    """Train a fresh tiny CLIP with CLIP's contrastive loss on generated synth-coin pairs (image,
    instruction); save it with its tokenizer, image processor and record to ``out_dir``."""
    from mcit_bench.models.pretrain import lr_at, save_model_dir  # mcit-tiny's warm-up and cosine schedule

    model, tokenizer, image_processor = build_tiny_guide(config.seed)
    rng = np.random.default_rng(config.seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        images, texts = pretraining_pairs(rng, config.batch_size)
        pixels = image_processor(images=images, return_tensors="pt")["pixel_values"]
        words = tokenizer([text + tokenizer.eos_token for text in texts], padding=True, truncation=True,
                          max_length=GuideShape().max_text, add_special_tokens=False, return_tensors="pt")
        loss = model(input_ids=words["input_ids"], attention_mask=words["attention_mask"], pixel_values=pixels,
                     return_loss=True).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{config.steps} loss {sum(losses[-log_every:]) / log_every:.4f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    record = {"command": f"mcit-bench pretrain-guide --seed {config.seed} --steps {config.steps}",
              "config": asdict(config), "shape": asdict(GuideShape()),
              "final_loss": sum(losses[-50:]) / min(50, len(losses)),
              "seconds": round(time.perf_counter() - started, 1),
              "versions": {"torch": torch.__version__}}
    save_model_dir(model, GuideFiles(tokenizer, image_processor), out_dir, record)
    return record


@dataclass(frozen=True)
class GuideFiles:
    """The tokenizer and image processor saved beside the weights, as a processor saves itself."""

    tokenizer: Any
    image_processor: Any

    def save_pretrained(self, folder: Path) -> None:
        self.tokenizer.chat_template = None  # mcit-tiny's chat turns mean nothing to a CLIP text tower
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)
