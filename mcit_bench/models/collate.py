"""Turn instruction rows into model batches: chat template, images, labels on answer tokens only."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mcit_bench.errors import DataError

IGNORE_INDEX = -100
Encoded = tuple[list[int], dict[str, torch.Tensor]]  # prompt ids, image tensors of one sample


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, or say which file is unreadable and why."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist; check the data root or regenerate the data") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"image file {path} cannot be read ({error}); replace or remove that record") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any mode, 16-bit greyscale and CMYK included."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda value: value * (1 / 256)).convert("L")
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """LLaVA-1.5's ``pad`` aspect mode: pad the short side, centred; boxes are normalised on this."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new("RGB", (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


class InstructionCollator:
    """Builds training batches (right padded, labels on the answer) and generation batches (left padded).

    The answer's tokens are found by rendering the chat template twice, with and without the
    assistant turn, so every backend's own turn markers (``</s>``, ``<|im_end|>``) are learned.
    Samples go through the backend's own processor (so placeholder expansion is the backend's,
    whatever its image grid), and each result is cached by (image file, instruction): later epochs
    over the same samples pay the image processor nothing.
    """

    def __init__(self, processor: Any, max_length: int = 256, cache_size: int = 8192) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_length = max_length
        self.pad_id = self.tokenizer.pad_token_id
        mean = getattr(processor.image_processor, "image_mean", None) or [0.5, 0.5, 0.5]
        self.pad_fill = tuple(int(255 * m) for m in mean)
        self._encoded: OrderedDict[tuple[str, str], Encoded] = OrderedDict()
        self._answers: dict[tuple[str, str], list[int]] = {}
        self._cache_size = cache_size

    def prompt(self, instruction: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def answer_suffix(self, instruction: str, answer: str) -> str:
        """The text the template puts after the generation prompt for this answer."""
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
        full = self.processor.apply_chat_template(messages)
        prompt = self.prompt(instruction)
        if not full.startswith(prompt):
            raise ValueError("the chat template renders the prompt differently with an answer; cannot mask labels")
        return full[len(prompt) :]

    def answer_ids(self, instruction: str, answer: str) -> list[int]:
        """Token ids of the answer turn (answer and end-of-turn marker), cached per (instruction, answer)."""
        key = (instruction, answer)
        if key not in self._answers:
            if len(self._answers) >= self._cache_size:
                self._answers.clear()
            suffix = self.answer_suffix(instruction, answer)
            self._answers[key] = self.tokenizer(suffix, add_special_tokens=False)["input_ids"]
        return self._answers[key]

    def _encode_uncached(self, samples: list[tuple[str | Image.Image, str]]) -> list[Encoded]:
        """Run the processor once over several samples and split its output per sample.

        Processors that return one tensor row per image (LLaVA's) are split by row; any other layout
        (flattened patches with a grid per image, as in Qwen2-VL) is processed one sample at a time.
        """
        images = [expand_to_square(load_image(image) if isinstance(image, str) else to_rgb(image), self.pad_fill)
                  for image, _ in samples]
        prompts = [self.prompt(instruction) for _, instruction in samples]
        out = self.processor(text=prompts, images=images)
        extra = {name: value for name, value in out.items() if name not in ("input_ids", "attention_mask")}
        if all(len(value) == len(samples) for value in extra.values()):
            return [(list(out["input_ids"][i]),
                     {name: torch.as_tensor(np.asarray(value[i]))[None] for name, value in extra.items()})
                    for i in range(len(samples))]
        encoded = []
        for prompt, image in zip(prompts, images):
            single = self.processor(text=[prompt], images=[image], return_tensors="pt")
            encoded.append((single["input_ids"][0].tolist(),
                            {k: v for k, v in single.items() if k not in ("input_ids", "attention_mask")}))
        return encoded

    def _encode_rows(self, rows: Sequence[dict[str, Any]]) -> tuple[list[list[int]], dict[str, torch.Tensor]]:
        """Prompt token ids (placeholder expanded the backend's way) and stacked image tensors."""
        keys = [(row["image"], row["instruction"]) if isinstance(row["image"], str) else None for row in rows]
        found: dict[int, Encoded] = {}
        for index, key in enumerate(keys):
            if key is not None and key in self._encoded:
                self._encoded.move_to_end(key)
                found[index] = self._encoded[key]
        missing = [index for index in range(len(rows)) if index not in found]
        if missing:
            fresh = self._encode_uncached([(rows[i]["image"], rows[i]["instruction"]) for i in missing])
            for index, item in zip(missing, fresh):
                found[index] = item
                if keys[index] is not None:
                    self._encoded[keys[index]] = item
            while len(self._encoded) > self._cache_size:
                self._encoded.popitem(last=False)
        encoded = [found[index] for index in range(len(rows))]
        # every backend's image tensors concatenate along the first axis (images, or patches)
        tensors = {name: torch.cat([item[1][name] for item in encoded]) for name in encoded[0][1]}
        return [item[0] for item in encoded], tensors

    def train_batch(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-padded inputs with labels: -100 everywhere but the answer and its end marker."""
        prompt_ids, image_inputs = self._encode_rows(rows)
        sequences, labels = [], []
        for row, ids in zip(rows, prompt_ids):
            answer_ids = self.answer_ids(row["instruction"], row["target"])
            sequences.append((ids + answer_ids)[: self.max_length])
            labels.append(([IGNORE_INDEX] * len(ids) + answer_ids)[: self.max_length])
        width = max(len(seq) for seq in sequences)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        label_ids = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (seq, lab) in enumerate(zip(sequences, labels)):
            input_ids[i, : len(seq)] = torch.tensor(seq)
            label_ids[i, : len(lab)] = torch.tensor(lab)
            attention[i, : len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "labels": label_ids, **image_inputs}

    def generation_batch(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Left-padded prompts, so every row's next token sits in the last column."""
        prompt_ids, image_inputs = self._encode_rows(rows)
        width = max(len(ids) for ids in prompt_ids)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(prompt_ids):
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            attention[i, width - len(ids) :] = 1
        return {"input_ids": input_ids, "attention_mask": attention, **image_inputs}
