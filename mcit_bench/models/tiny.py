"""``mcit-tiny``: a real LLaVA-architecture model small enough to train on a laptop CPU.

Built only from transformers' own classes (a CLIP vision tower, LLaVA's projector, a Llama language
model), with a word-level tokenizer over the synthetic world's vocabulary, a CLIP image processor and
LLaVA-1.5's chat template, saved in Hugging Face format so it loads with ``from_pretrained`` like any
hub model. ``build_tiny`` makes the random-initialised model; ``mcit_bench.models.pretrain`` trains it
on the description mix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<unk>", "<s>", "</s>", IMAGE_TOKEN)
# Pieces are words, two-decimal numbers, integers or single symbols, each with its leading space
# kept, so that decoding is plain concatenation and "[0.12, 0.5]" round-trips exactly.
PIECE_PATTERN = r" ?(?:\d\.\d\d|[A-Za-z]+|\d+|[^\sA-Za-z\d])|\n| "
# LLaVA-1.5's conversation format: "USER: <image>\n{prompt} ASSISTANT: {answer}</s>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% for content in message['content'] %}{{ content['text'] }}{% endfor %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)




@dataclass(frozen=True)
class TinyShape:
    """The architecture of mcit-tiny; changing it changes the committed weights."""

    image_size: int = 64
    patch_size: int = 16
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 384
    # which of the tower's hidden states feeds the projector: 0 is the patch and position embeddings.
    # Features from the last layer mix every patch with every other, and on them the language model
    # never learnt to find an object by its name (grounding, gqa); see docs/DATA.md
    vision_feature_layer: int = 0


def build_vocabulary(texts: list[str]) -> list[str]:
    """Every piece of ``texts`` with and without a leading space, plus numbers, sorted."""
    pieces: set[str] = {" ", "\n"}
    for text in texts:
        for piece in re.findall(PIECE_PATTERN, text):
            pieces.add(piece)
            pieces.add(piece.lstrip(" ") or piece)
            if piece.strip():
                pieces.add(" " + piece.lstrip(" "))
    for value in range(101):
        pieces.update({f"{value / 100:.2f}", f" {value / 100:.2f}"})
    for value in range(21):
        pieces.update({str(value), f" {value}"})
    for word in ("USER", "ASSISTANT", ":"):
        pieces.update({word, " " + word})
    return sorted(pieces)


def build_tokenizer(vocabulary: list[str], extra_special_tokens: dict[str, str] | None = None,
                    eos_token: str = "</s>"):
    """A word-level fast tokenizer; unknown pieces map to ``<unk>``.

    ``extra_special_tokens`` names an architecture's own markers (its image token, turn markers),
    by default LLaVA's ``image_token``; each becomes a special token and a named attribute.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    extra = extra_special_tokens or {"image_token": IMAGE_TOKEN}
    specials = list(SPECIAL_TOKENS) + [token for token in extra.values() if token not in SPECIAL_TOKENS]
    specials += [eos_token] if eos_token not in specials else []
    vocab = {token: index for index, token in enumerate(specials)}
    for piece in vocabulary:
        vocab.setdefault(piece, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token=eos_token,
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens=extra,
        clean_up_tokenization_spaces=False,
        model_max_length=256,
        padding_side="left",
    )


def build_processor(tokenizer, shape: TinyShape):
    from transformers import LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": shape.image_size},
        crop_size={"height": shape.image_size, "width": shape.image_size},
        do_center_crop=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=shape.patch_size,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's class token, dropped by the "default" strategy
    )


def build_config(tokenizer, shape: TinyShape):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=shape.vision_hidden,
        intermediate_size=shape.vision_hidden * 2,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.vision_heads,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        projection_dim=shape.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.text_hidden,
        intermediate_size=shape.text_intermediate,
        num_hidden_layers=shape.text_layers,
        num_attention_heads=shape.text_heads,
        num_key_value_heads=shape.text_heads,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    n_patches = (shape.image_size // shape.patch_size) ** 2
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=n_patches,
        vision_feature_select_strategy="default",
        # counted from the end: transformers reads a feature layer of 0 as "no hidden states wanted"
        vision_feature_layer=shape.vision_feature_layer - shape.vision_layers - 1,
        projector_hidden_act="gelu",
    )


def build_tiny(seed: int, shape: TinyShape | None = None):
    """The untrained mcit-tiny: (model, processor), deterministic from ``seed``."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from mcit_bench.data.synthetic import vocabulary_corpus

    shape = shape or TinyShape()
    tokenizer = build_tokenizer(build_vocabulary(vocabulary_corpus()))
    processor = build_processor(tokenizer, shape)
    config = build_config(tokenizer, shape)
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model, processor
