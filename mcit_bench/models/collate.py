"""Turn instruction rows into model batches: chat template, images, labels on answer tokens only."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from mcit_bench.core.errors import DataError
from mcit_bench.core.records import IGNORE_INDEX

# processor outputs with one value per prompt token (Qwen2-VL marks its image tokens for M-RoPE):
# padded and extended over the answer like the input ids, text tokens being 0
TOKEN_ALIGNED = ("mm_token_type_ids", "token_type_ids")
# the blank image's side before the processor resizes it: Qwen2-VL's smallest image (56 x 56 pixels)
BLANK_SIDE = 56


class Encoded(NamedTuple):
    """One sample's prompt as the backend's processor encodes it."""

    ids: list[int]
    token_types: dict[str, list[int]]  # the TOKEN_ALIGNED outputs
    images: dict[str, torch.Tensor]  # pixel values and whatever else the processor gives per image


def encoded_bytes(item: Encoded) -> int:
    """What a cached sample costs: its image tensors (the token ids are a few hundred bytes)."""
    return sum(tensor.nbytes for tensor in item.images.values())


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


def split_output(out: Any, index: int, per_image_rows: bool) -> Encoded:
    """Sample ``index`` of a processor's output. With ``per_image_rows`` every image tensor has one row
    per sample (LLaVA); otherwise the output holds this one sample (patches flattened, as in Qwen2-VL)."""
    images = {}
    for name, value in out.items():
        if name in ("input_ids", "attention_mask") or name in TOKEN_ALIGNED:
            continue
        images[name] = torch.as_tensor(np.asarray(value[index]))[None] if per_image_rows else torch.as_tensor(value)
    return Encoded([int(t) for t in out["input_ids"][index]],
                   {name: [int(t) for t in out[name][index]] for name in TOKEN_ALIGNED if name in out}, images)


def token_type_names(encoded: list[Encoded]) -> list[str]:
    """The token-aligned outputs any sample of a batch has (text-only samples may lack some: zeros)."""
    return sorted({name for item in encoded for name in item.token_types})


class InstructionCollator:
    """Builds training batches (right padded, labels on the answer) and generation batches (left padded).

    The answer's tokens are found by rendering the chat template twice, with and without the
    assistant turn, so every backend's own turn markers (``</s>``, ``<|im_end|>``) are learned.
    Samples go through the backend's own processor (so placeholder expansion is the backend's,
    whatever its image grid), and each result is cached by (image file, instruction): later epochs
    over the same samples pay the image processor nothing. The cache is bounded by the bytes of
    its image tensors, not by a count, so it holds a whole multi-task stream of 64-pixel images
    (joint training's 16,000 samples of synth-coin) yet never fills the host with 336-pixel ones.

    ``max_length`` (:func:`mcit_bench.models.loading.sequence_limit`) bounds a training sequence. Only
    the answer is ever cut, from its end, and each cut sample is counted (``cut_samples``): cutting
    the prompt would cut image placeholders the model fills with exactly as many image features (a
    336-pixel LLaVA-1.5 image is 576 of them) and the model would refuse the batch. A prompt that
    leaves no room for an answer token is refused in one sentence.
    """

    def __init__(self, processor: Any, max_length: int, cache_bytes: int = 1 << 30,
                 answer_cache_size: int = 65536) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_length = max_length
        self.cut_samples = 0
        self.pad_id = self.tokenizer.pad_token_id
        mean = getattr(processor.image_processor, "image_mean", None) or [0.5, 0.5, 0.5]
        self.pad_fill = tuple(int(255 * m) for m in mean)
        self._encoded: OrderedDict[tuple[str, str], Encoded] = OrderedDict()
        self._encoded_bytes = 0
        self._cache_bytes = cache_bytes
        self._answers: dict[tuple[str, str], list[int]] = {}
        self._answer_cache_size = answer_cache_size

    @staticmethod
    def user_turn(instruction: str, has_image: bool) -> dict[str, Any]:
        """The user's message; a text-only sample (no image, as text-only ScienceQA items) has no image slot."""
        image = [{"type": "image"}] if has_image else []
        return {"role": "user", "content": [*image, {"type": "text", "text": instruction}]}

    def prompt(self, instruction: str, has_image: bool = True) -> str:
        return self.processor.apply_chat_template([self.user_turn(instruction, has_image)],
                                                  add_generation_prompt=True)

    def answer_suffix(self, instruction: str, answer: str, has_image: bool = True) -> str:
        """The text the template puts after the generation prompt for this answer."""
        messages = [
            self.user_turn(instruction, has_image),
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
        full = self.processor.apply_chat_template(messages)
        prompt = self.prompt(instruction, has_image)
        if not full.startswith(prompt):
            raise ValueError("the chat template renders the prompt differently with an answer; cannot mask labels")
        return full[len(prompt) :]

    def answer_ids(self, instruction: str, answer: str, has_image: bool = True) -> list[int]:
        """Token ids of the answer turn (answer and end-of-turn marker), cached per sample kind."""
        key = (instruction, answer, has_image)
        if key not in self._answers:
            if len(self._answers) >= self._answer_cache_size:
                self._answers.clear()
            suffix = self.answer_suffix(instruction, answer, has_image)
            self._answers[key] = self.tokenizer(suffix, add_special_tokens=False)["input_ids"]
        return self._answers[key]

    def _encode_uncached(self, samples: list[tuple[str | Image.Image, str]]) -> list[Encoded]:
        """Run the processor over several samples and split its output per sample.

        Samples with an image go through the processor together; processors that return one tensor
        row per image (LLaVA's) are split by row, any other layout (flattened patches with a grid per
        image, as in Qwen2-VL) is processed one sample at a time. A text-only sample (image "") is
        its prompt's tokens alone.
        """
        with_image = [i for i, (image, _) in enumerate(samples) if not (isinstance(image, str) and not image)]
        encoded: dict[int, Encoded] = {}
        for index in set(range(len(samples))) - set(with_image):
            out = self.processor(text=[self.prompt(samples[index][1], has_image=False)])
            encoded[index] = split_output(out, 0, per_image_rows=True)
        if with_image:
            chosen = [samples[i] for i in with_image]
            images = [expand_to_square(load_image(image) if isinstance(image, str) else to_rgb(image), self.pad_fill)
                      for image, _ in chosen]
            prompts = [self.prompt(instruction) for _, instruction in chosen]
            out = self.processor(text=prompts, images=images)
            if all(len(value) == len(chosen) for name, value in out.items() if name not in TOKEN_ALIGNED):
                parts = [split_output(out, i, per_image_rows=True) for i in range(len(chosen))]
            else:
                singles = (self.processor(text=[prompt], images=[image], return_tensors="pt")
                           for prompt, image in zip(prompts, images))
                parts = [split_output(single, 0, per_image_rows=False) for single in singles]
            encoded.update(zip(with_image, parts))
        return [encoded[index] for index in range(len(samples))]

    def _encode_rows(self, rows: Sequence[dict[str, Any]]) -> list[Encoded]:
        """Each row's prompt, placeholder expanded the backend's way."""
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
                if keys[index] is not None and keys[index] not in self._encoded:
                    self._encoded[keys[index]] = item
                    self._encoded_bytes += encoded_bytes(item)
            while self._encoded_bytes > self._cache_bytes:
                _, evicted = self._encoded.popitem(last=False)
                self._encoded_bytes -= encoded_bytes(evicted)
        return [found[index] for index in range(len(rows))]

    def blank_image(self) -> dict[str, torch.Tensor]:
        """The processor's image inputs for a blank image of the padding colour (mcit_bench.models.blank_image)."""
        blank = Image.new("RGB", (BLANK_SIDE, BLANK_SIDE), self.pad_fill)
        out = self.processor(text=[self.prompt("")], images=[blank], return_tensors="pt")
        return split_output(out, 0, per_image_rows=False).images

    @property
    def cached_bytes(self) -> int:
        """Bytes of image tensors the prompt cache holds now (at most ``cache_bytes``)."""
        return self._encoded_bytes

    @staticmethod
    def image_inputs(encoded: list[Encoded]) -> dict[str, torch.Tensor]:
        # every backend's image tensors concatenate along the first axis (images, or patches); a
        # text-only sample adds none, and a batch of text-only samples has no image inputs at all
        with_images = [item for item in encoded if item.images]
        if not with_images:
            return {}
        return {name: torch.cat([item.images[name] for item in with_images]) for name in with_images[0].images}

    def train_batch(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-padded inputs with labels: -100 everywhere but the answer and its end marker."""
        encoded = self._encode_rows(rows)
        sequences, labels, token_types = [], [], []
        for row, item in zip(rows, encoded):
            answer_ids = self.fitted_answer(row, item)
            sequences.append(item.ids + answer_ids)
            labels.append([IGNORE_INDEX] * len(item.ids) + answer_ids)
            token_types.append({name: item.token_types.get(name, [0] * len(item.ids)) + [0] * len(answer_ids)
                                for name in token_type_names(encoded)})
        width = max(len(seq) for seq in sequences)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        label_ids = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        types = {name: torch.zeros((len(rows), width), dtype=torch.long) for name in token_type_names(encoded)}
        for i, (seq, lab) in enumerate(zip(sequences, labels)):
            input_ids[i, : len(seq)] = torch.tensor(seq)
            label_ids[i, : len(lab)] = torch.tensor(lab)
            attention[i, : len(seq)] = 1
            for name, values in token_types[i].items():
                types[name][i, : len(values)] = torch.tensor(values)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": label_ids, **types,
                **self.image_inputs(encoded)}

    def fitted_answer(self, row: dict[str, Any], item: Encoded) -> list[int]:
        """The sample's answer tokens, cut from the end to fit ``max_length`` after its whole prompt."""
        answer_ids = self.answer_ids(row["instruction"], row["target"], bool(item.images))
        room = self.max_length - len(item.ids)
        if room < 1:
            where = f"sample {row['id']!r}" if "id" in row else "a sample"
            image = row["image"] if isinstance(row["image"], str) else "an image in memory"
            raise DataError(f"{where} ({image or 'no image'}) has a prompt of {len(item.ids)} tokens, image "
                            f"placeholders included, and the model takes {self.max_length}; raise --max-length "
                            f"(if the model's positions allow) or shorten that sample's instruction")
        if len(answer_ids) > room:
            self.cut_samples += 1
            return answer_ids[:room]
        return answer_ids

    def check_fits(self, task: str, dataset: Any) -> None:
        """Refuse, before any training, a task whose longest sample leaves its answer no room: the
        longest by text with an image and without, measured through the processor (placeholders
        expanded as the model will see them)."""
        texts = [f"{instruction} {target}" for instruction, target in zip(dataset["instruction"], dataset["target"])]
        if not texts:
            return
        lengths = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        images = dataset["image"]
        for wants_image in (True, False):
            candidates = [i for i, image in enumerate(images) if bool(image) == wants_image]
            if candidates:
                longest = max(candidates, key=lambda i: len(lengths[i]))
                try:
                    self.train_batch([dataset[longest]])
                except DataError as error:
                    raise DataError(f"task {task!r}: {error}") from None

    def generation_batch(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Left-padded prompts, so every row's next token sits in the last column."""
        encoded = self._encode_rows(rows)
        width = max(len(item.ids) for item in encoded)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        types = {name: torch.zeros((len(rows), width), dtype=torch.long) for name in token_type_names(encoded)}
        for i, item in enumerate(encoded):
            input_ids[i, width - len(item.ids) :] = torch.tensor(item.ids)
            attention[i, width - len(item.ids) :] = 1
            for name, values in item.token_types.items():
                types[name][i, width - len(values) :] = torch.tensor(values)
        return {"input_ids": input_ids, "attention_mask": attention, **types, **self.image_inputs(encoded)}
