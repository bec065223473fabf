"""The guidance encoder (issue 28): the packaged tiny CLIP loads with transformers' CLIP classes and is
named by its weights; its features do not depend on the batch; pre-training is repeatable; a folder
that is not a CLIP is one sentence; and how well its features tell synth-coin's tasks apart, measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mcit_bench.core.errors import ConfigError
from mcit_bench.core.io import weights_fingerprint
from mcit_bench.core.shipped import packaged_tiny_folder
from mcit_bench.models.guide import (
    TINY_GUIDE,
    GuideEncoder,
    GuidePretrainConfig,
    packaged_guide_folder,
    pretrain_guide,
    pretraining_pairs,
)


@pytest.fixture(scope="module")
def guide() -> GuideEncoder:
    return GuideEncoder(TINY_GUIDE)


def test_the_packaged_guide_is_a_clip_named_by_its_weights(guide):
    from transformers import CLIPModel

    assert isinstance(guide.model, CLIPModel)
    assert guide.record() == {"name": TINY_GUIDE, "weights": weights_fingerprint(packaged_guide_folder())}
    assert sum(p.numel() for p in guide.model.parameters()) == 302_785
    assert not any(p.requires_grad for p in guide.model.parameters())


def test_a_samples_features_do_not_depend_on_its_batch(guide):
    images, texts = pretraining_pairs(np.random.default_rng(5), 6)
    image, text = guide.encode(images, texts)
    assert image.shape == text.shape == (6, 64)
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(6))
    alone_image, alone_text = guide.encode(images[2:3], texts[2:3])  # shorter padding, other neighbours
    torch.testing.assert_close(alone_image[0], image[2], atol=1e-6, rtol=0)
    torch.testing.assert_close(alone_text[0], text[2], atol=1e-6, rtol=0)

def test_features_are_computed_once_per_row_content(guide, tmp_path):
    images, texts = pretraining_pairs(np.random.default_rng(6), 2)
    for index, image in enumerate(images):
        image.save(tmp_path / f"{index}.png")
    rows = [{"image": str(tmp_path / f"{index}.png"), "instruction": text} for index, text in enumerate(texts)]
    cached = guide.features(rows)
    calls = []
    original = guide.encode
    guide.encode = lambda *args: calls.append(args) or original(*args)
    try:
        again = guide.features(rows[::-1] + [{"image": "", "instruction": texts[0]}])
    finally:
        guide.encode = original
    assert len(calls) == 1 and len(calls[0][0]) == 1  # only the text-only row was new
    assert torch.equal(cached[0][0], again[0][1]) and torch.equal(cached[1][1], again[1][0])


def test_pretraining_is_repeatable(tmp_path):
    first = pretrain_guide(GuidePretrainConfig(steps=3, batch_size=8), tmp_path / "a", log_every=0)
    pretrain_guide(GuidePretrainConfig(steps=3, batch_size=8), tmp_path / "b", log_every=0)
    assert weights_fingerprint(tmp_path / "a") == weights_fingerprint(tmp_path / "b")
    assert first["command"] == "mcit-bench pretrain-guide --seed 0 --steps 3"
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == sorted(
        path.name for path in packaged_guide_folder().iterdir())


def test_a_folder_that_is_not_a_clip_is_refused_in_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match=f"guide encoder '{packaged_tiny_folder()}' cannot be loaded as a CLIP"):
        GuideEncoder(str(packaged_tiny_folder()))  # mcit-tiny is a LLaVA
    with pytest.raises(ConfigError, match="cannot be loaded as a CLIP"):
        GuideEncoder(str(tmp_path))


def test_the_guides_features_tell_synth_coins_tasks_apart(guide, cache_root):
    """Nearest task prototype (the mean of a task's training features, image and text similarities
    added, as DISCO and HiDe-LLaVA choose) on the ci subset's test split, per task. Six tasks are told
    apart almost always; sqa's questions about the shape in the picture read like imagenet's, and
    vqav2's questions about objects like gqa's (docs/METHODS.md, "The guidance encoder")."""
    from mcit_bench.data.prepare import prepare_data_root
    from mcit_bench.data.run_data import load_stream_data
    from mcit_bench.data.stream import load_stream

    stream = load_stream("synth-coin", "ci")
    train, test = load_stream_data(stream, prepare_data_root(stream, None, cache_root), cache_root)

    def features(dataset):
        return guide.encode([Image.open(path) for path in dataset["image"]], list(dataset["instruction"]))

    prototypes = [features(train[task]) for task in stream.task_names]
    image_prototypes = torch.nn.functional.normalize(torch.stack([image.mean(0) for image, _ in prototypes]), dim=-1)
    text_prototypes = torch.nn.functional.normalize(torch.stack([text.mean(0) for _, text in prototypes]), dim=-1)
    accuracy = {}
    for position, task in enumerate(stream.task_names):
        image, text = features(test[task])
        chosen = (image @ image_prototypes.T + text @ text_prototypes.T).argmax(dim=1)
        accuracy[task] = round(100 * float((chosen == position).float().mean()), 1)
    assert {task for task, value in accuracy.items() if value < 95} <= {"sqa", "gqa", "vqav2"}
    assert accuracy["sqa"] >= 50 and accuracy["gqa"] >= 75 and accuracy["vqav2"] >= 50, accuracy
    assert sum(accuracy.values()) / len(accuracy) >= 85, accuracy


def test_a_guide_is_refused_for_a_method_that_reads_none_and_required_on_a_published_stream():
    from mcit_bench.config import RunConfig
    from mcit_bench.engine.run import Run

    with pytest.raises(ConfigError, match="method 'seqft' reads no guide encoder; leave out --guide-encoder"):
        Run(RunConfig(method="seqft", subset="ci", guide_encoder=TINY_GUIDE), Path("runs"), None, None, None, None)
    published = Run(RunConfig(method="disco", sequence="coin"), Path("runs"), None, None, None, None)
    with pytest.raises(ConfigError, match="method 'disco' reads a guide encoder and 'coin' is a published stream: "
                                          "pass --guide-encoder with a CLIP"):
        published.load_guide(torch.device("cpu"))
    generated = Run(RunConfig(method="disco", subset="ci"), Path("runs"), None, None, None, None)
    assert generated.load_guide(torch.device("cpu")).record()["name"] == TINY_GUIDE
