"""Tiny random models of the real backends' exact architectures, built locally from their configs.

A 7B checkpoint cannot be downloaded here, but every code path the harness takes with one (its
processor, chat template, image placeholders, position ids, LoRA targets) can be run on a model of
the same class a few hundred kilobytes large. These builders make such models with mcit-tiny's
word-level tokenizer plus the architecture's own special tokens; they are for tests and for trying a
backend before spending GPU hours on it, and learn nothing useful (random weights).
"""

from __future__ import annotations

from pathlib import Path

import torch

from mcit_bench.models.tiny import build_tokenizer, build_vocabulary

# ChatML turns, as Qwen2-VL-Instruct and InternVL3 write them, reduced to what the harness sends
# (one image, text, no tools); ``IMAGE`` is where the architecture's image placeholder goes
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}IMAGE"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IMAGE_SIDE = 56  # every image resized to 4 x 4 patches of 14 px: 4 tokens after the 2 x 2 merge
QWEN_TOKENS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
               "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
               "im_start_token": "<|im_start|>"}
INTERNVL_TOKENS = {"context_image_token": "<IMG_CONTEXT>", "start_image_token": "<img>", "end_image_token": "</img>",
                   "video_token": "<video>", "im_start_token": "<|im_start|>"}


def chatml_tokenizer(markers: dict[str, str]):
    """mcit-tiny's word-level vocabulary plus the architecture's markers; answers end with <|im_end|>."""
    from mcit_bench.data.synthetic import vocabulary_corpus

    words = vocabulary_corpus() + ["system user assistant You are a helpful"]
    tokenizer = build_tokenizer(build_vocabulary(words), extra_special_tokens=markers, eos_token="<|im_end|>")
    tokenizer.model_max_length = REAL_LIMIT  # as Qwen2-VL-7B-Instruct's tokenizer_config.json declares
    return tokenizer


def qwen_token_ids(tokenizer) -> dict[str, int]:
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in QWEN_TOKENS.items()}
    return {"image_token_id": ids["image_token"], "video_token_id": ids["video_token"],
            "vision_start_token_id": ids["vision_start_token"], "vision_end_token_id": ids["vision_end_token"]}


# Qwen2-VL-7B-Instruct's sequence limit (tokenizer and rotary positions alike): the tiny models keep
# the real limit, so sequence lengths are checked as they would be
REAL_LIMIT = 32768


def _text_config(tokenizer, **extra) -> dict:
    return {**dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=REAL_LIMIT,
                   pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id), **extra}


def _finish(model, processor_class: type, image_processor, tokenizer, template: str, **processor_kwargs):
    """The processor (images only where torchvision is missing) and generation settings."""
    from transformers.utils import is_torchvision_available

    from mcit_bench.models.loading import images_only

    if not is_torchvision_available():
        processor_class = images_only(processor_class)
    processor = processor_class(image_processor=image_processor, tokenizer=tokenizer, chat_template=template,
                                **processor_kwargs)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, processor


def build_tiny_qwen2_vl(seed: int, version: str = "2", image_side: int = IMAGE_SIDE):
    """(model, processor) of a random Qwen2-VL (``version`` "2") or Qwen2.5-VL ("2.5"), every image
    resized to ``image_side`` pixels square (448: 1,024 patches, 256 image tokens after the merge)."""
    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = chatml_tokenizer(QWEN_TOKENS)
    vision = dict(depth=2, hidden_size=32, num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    if version == "2":
        config_class, model_class = transformers.Qwen2VLConfig, transformers.Qwen2VLForConditionalGeneration
        processor_class = transformers.Qwen2VLProcessor
        vision = {**vision, "embed_dim": 32, "hidden_size": 64}
    elif version == "2.5":
        config_class, model_class = transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration
        processor_class = transformers.Qwen2_5_VLProcessor
        vision = {**vision, "intermediate_size": 64, "out_hidden_size": 64, "window_size": 56,
                  "fullatt_block_indexes": [1]}
    else:
        raise ValueError(f"unknown Qwen-VL version {version!r}; use '2' or '2.5'")
    # M-RoPE: head_dim 16, so 8 rotary frequencies split over (time, height, width)
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    config = config_class(text_config=_text_config(tokenizer, rope_parameters=rope), vision_config=vision,
                          **qwen_token_ids(tokenizer))
    pixels = image_side * image_side
    image_processor = Qwen2VLImageProcessorPil(size={"shortest_edge": pixels, "longest_edge": pixels},
                                               patch_size=14, merge_size=2, temporal_patch_size=2)
    template = CHATML_TEMPLATE.replace("IMAGE", "<|vision_start|><|image_pad|><|vision_end|>")
    torch.manual_seed(seed)
    return _finish(model_class(config), processor_class, image_processor, tokenizer, template)


def build_tiny_internvl(seed: int):
    """(model, processor) of a random InternVL (InternVL3-hf layout: InternViT, pixel shuffle, Qwen2)."""
    import transformers
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    tokenizer = chatml_tokenizer(INTERNVL_TOKENS)
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  image_size=[IMAGE_SIDE, IMAGE_SIDE], patch_size=[14, 14])
    tokens_per_image = (IMAGE_SIDE // 14) ** 2 // 4  # pixel shuffle with downsample ratio 0.5
    config = transformers.InternVLConfig(
        vision_config=vision, text_config=_text_config(tokenizer, model_type="qwen2"),
        image_token_id=tokenizer.convert_tokens_to_ids(INTERNVL_TOKENS["context_image_token"]),
        image_seq_length=tokens_per_image)
    # one tile per image; InternVL's dynamic tiling (crop_to_patches) gives a sample several tiles
    image_processor = GotOcr2ImageProcessorPil(size={"height": IMAGE_SIDE, "width": IMAGE_SIDE}, crop_to_patches=False)
    template = CHATML_TEMPLATE.replace("IMAGE", "<IMG_CONTEXT>\n")
    torch.manual_seed(seed)
    model = transformers.InternVLForConditionalGeneration(config)
    return _finish(model, transformers.InternVLProcessor, image_processor, tokenizer, template,
                   image_seq_length=tokens_per_image)


LLAVA_IMAGE_SIDE = 336  # LLaVA-1.5's CLIP ViT-L/14-336: 24 x 24 patches, 576 image tokens
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def build_tiny_llava15(seed: int):
    """(model, processor) of a random LLaVA-1.5 at its real shapes but tiny widths: a 336-pixel CLIP
    tower of 14-pixel patches (576 image tokens a sample), the second-to-last layer's features, the
    two-layer GELU projector, a Llama with 4096 positions, and a tokenizer that names no length
    limit, as llava-hf/llava-1.5-7b-hf's does."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from mcit_bench.data.synthetic import vocabulary_corpus
    from mcit_bench.models.tiny import CHAT_TEMPLATE, IMAGE_TOKEN

    tokenizer = build_tokenizer(build_vocabulary(vocabulary_corpus()))
    tokenizer.model_max_length = int(1e30)  # transformers' sentinel for "no limit"
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=LLAVA_IMAGE_SIDE, patch_size=14, projection_dim=32)
    text = LlamaConfig(**_text_config(tokenizer, max_position_embeddings=4096), tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         image_seq_length=(LLAVA_IMAGE_SIDE // 14) ** 2, vision_feature_select_strategy="default",
                         vision_feature_layer=-2, projector_hidden_act="gelu")
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": LLAVA_IMAGE_SIDE},
                                           crop_size={"height": LLAVA_IMAGE_SIDE, "width": LLAVA_IMAGE_SIDE},
                                           do_center_crop=True, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                               image_token=IMAGE_TOKEN, num_additional_image_tokens=1)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, processor


def save_tiny(model, processor, folder: Path) -> Path:
    """Save like any Hugging Face model folder (``from_pretrained`` loads it)."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
