"""The packaged mcit-tiny: a real LLaVA loaded with from_pretrained, its tokenizer and template."""

import json

import numpy as np
import pytest
import torch

from mcit_bench.core.records import IGNORE_INDEX
from mcit_bench.core.shipped import packaged_tiny_folder
from mcit_bench.data import world as w
from mcit_bench.data.synthetic import TASKS, pretraining_sample
from mcit_bench.models.collate import InstructionCollator
from mcit_bench.models.loading import load_model
from mcit_bench.models.tiny import TinyShape


@pytest.fixture(scope="module")
def tiny():
    return load_model("mcit-tiny")


def test_it_is_a_transformers_llava_with_the_documented_shape(tiny):
    from transformers import LlavaForConditionalGeneration

    model, processor = tiny
    assert isinstance(model, LlavaForConditionalGeneration)
    shape = TinyShape()
    vision, text = model.config.vision_config, model.config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.patch_size) == (shape.vision_hidden, 4, 16)
    assert (text.hidden_size, text.num_hidden_layers, text.intermediate_size) == (128, 4, 384)
    vocab = len(processor.tokenizer)
    vision_params = (3 * 16 * 16 * 128 + 128 + 17 * 128  # patch embedding, class embedding, positions
                     + 2 * 2 * 128  # pre- and post-layer norms
                     + 4 * (4 * (128 * 128 + 128) + 2 * 2 * 128 + 128 * 256 + 256 + 256 * 128 + 128))
    projector = 2 * (128 * 128 + 128)
    llama = vocab * 128 + 4 * (4 * 128 * 128 + 3 * 128 * 384 + 2 * 128) + 128 + vocab * 128
    assert sum(p.numel() for p in model.parameters()) == vision_params + projector + llama


def test_every_text_of_the_world_is_in_the_vocabulary(tiny):
    _, processor = tiny
    tokenizer = processor.tokenizer
    rng = np.random.default_rng(11)
    texts = []
    for task in TASKS.values():
        for _ in range(30):
            sample = task.generate(rng)
            texts += [sample.instruction, " " + " ".join(sample.answers)]
    texts += [pretraining_sample(rng)[2] for _ in range(200)]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text
        assert tokenizer.decode(ids) == text  # decoding is exact, spaces and all


def test_chat_template_and_labels_cover_only_the_answer(tiny):
    _, processor = tiny
    collator = InstructionCollator(processor, processor.tokenizer.model_max_length)
    assert collator.prompt("Q?") == "USER: <image>\nQ? ASSISTANT:"
    rng = np.random.default_rng(0)
    sample = TASKS["grounding"].generate(rng)
    batch = collator.train_batch([{"image": sample.image, "instruction": sample.instruction,
                                   "target": sample.answers[0]}])
    labels = batch["labels"][0]
    answer = processor.tokenizer.decode(labels[labels != IGNORE_INDEX])
    assert answer == " " + sample.answers[0] + "</s>"
    image_token = model_image_token(processor)
    assert int((batch["input_ids"][0] == image_token).sum()) == 16  # 64 px / 16 px patches, squared


def model_image_token(processor) -> int:
    return processor.tokenizer.convert_tokens_to_ids("<image>")


def test_base_model_describes_instead_of_answering(tiny):
    model, processor = tiny
    collator = InstructionCollator(processor, processor.tokenizer.model_max_length)
    rng = np.random.default_rng(1)
    sample = TASKS["gqa"].generate(rng)
    batch = collator.generation_batch([{"image": sample.image, "instruction": sample.instruction}])
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=24, do_sample=False)
    text = processor.tokenizer.decode(output[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    # a pre-training description ("a blue circle at [0.80, ...") rather than a one-word answer
    article, colour, thing = text.split()[:3]
    assert article in ("a", "an") and colour in w.COLOURS and thing in w.SHAPES + w.ICONS
    assert " at [" in text


def test_pretraining_command_is_recorded_beside_the_weights():
    record = json.loads((packaged_tiny_folder() / "pretraining.json").read_text())
    assert record["command"].startswith("mcit-bench pretrain-tiny --seed 0 --steps ")
    assert record["shape"] == TinyShape().__dict__


def test_prompt_cache_is_bounded_by_image_bytes_and_exact(tiny, tmp_path):
    _, processor = tiny
    one_image = 3 * 64 * 64 * 4  # mcit-tiny's pixel values: 3 x 64 x 64 float32
    collator = InstructionCollator(processor, processor.tokenizer.model_max_length, cache_bytes=3 * one_image)
    rng = np.random.default_rng(2)
    rows = []
    for index in range(5):
        sample = TASKS["imagenet"].generate(rng)
        path = tmp_path / f"{index}.png"
        sample.image.save(path)
        rows.append({"image": str(path), "instruction": sample.instruction, "target": sample.answers[0]})
    first = collator.train_batch(rows[:1])
    collator.train_batch(rows + rows[:2])  # five new samples, two of them twice in the batch
    assert collator.cached_bytes == 3 * one_image  # the three most recent fit; the oldest went
    assert [key[0] for key in collator._encoded] == [rows[i]["image"] for i in (2, 3, 4)]
    again = collator.train_batch(rows[:1])  # evicted, encoded afresh: the same batch
    assert all(torch.equal(first[name], again[name]) for name in first)


def test_text_only_samples_share_a_batch_with_image_ones(tiny):
    from PIL import Image

    from mcit_bench.models.anatomy import image_row_samples, pooled_image_features
    from mcit_bench.models.loading import unknown_word_share

    model, processor = tiny
    collator = InstructionCollator(processor, processor.tokenizer.model_max_length)
    picture = Image.new("RGB", (64, 64), (200, 30, 30))
    with_image = {"image": picture, "instruction": "what color is the square?", "target": "red"}
    text_only = {"image": "", "instruction": "what color is the square?", "target": "red"}
    batch = collator.train_batch([text_only, with_image])
    image_tokens = (batch["input_ids"] == model.config.image_token_id).sum(dim=1)
    assert image_tokens.tolist() == [0, model.config.vision_config.image_size ** 2 // 16 ** 2]
    assert batch["pixel_values"].shape[0] == 1  # one image for the one sample that has it
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)
    summary, pooled = pooled_image_features(model, batch)
    alone, _ = pooled_image_features(model, collator.train_batch([with_image]))
    assert torch.equal(summary[0], torch.zeros_like(summary[0])) and torch.equal(pooled[0], torch.zeros_like(pooled[0]))
    torch.testing.assert_close(summary[1], alone[0])
    assert image_row_samples(model, batch)[1].tolist() == [1]  # the image axis skips the text-only sample
    generation = collator.generation_batch([text_only, text_only])
    assert "pixel_values" not in generation  # no image at all: the model runs on text alone
    # mcit-tiny's vocabulary is synth-coin's: real words fall to its unknown token
    share, examples = unknown_word_share(processor.tokenizer, ["What color is the photosynthesis"])
    assert share == pytest.approx(0.2) and examples == ["photosynthesis"]
