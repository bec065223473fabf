"""The task selector's queries (expansion, BranchLoRA) read the frozen vision tower and input embeddings
only, so each sample's are computed once: read back exactly in a later batch, in training and at
evaluation alike."""

import torch

import mcit_bench.methods.selector as selector_module
from mcit_bench.data.prepare import prepare_data_root
from mcit_bench.data.run_data import load_stream_data
from mcit_bench.data.stream import load_stream
from mcit_bench.methods.base import rows_of
from mcit_bench.methods.selector import KeySelector, sample_queries
from mcit_bench.models.anatomy import image_feature_dim
from mcit_bench.models.collate import InstructionCollator
from mcit_bench.models.loading import load_model
from tests.conftest import FIXTURES


def test_each_samples_queries_are_computed_once_and_read_back_exactly(cache_root, monkeypatch):
    stream = load_stream(str(FIXTURES / "two_task_quick.yaml"))
    train, _ = load_stream_data(stream, prepare_data_root(stream, None, cache_root), cache_root)
    model, processor = load_model("mcit-tiny")
    collator = InstructionCollator(processor, processor.tokenizer.model_max_length)
    rows = rows_of(train[stream.tasks[0].name], list(range(6)))
    selector = KeySelector(image_feature_dim(model), model.get_input_embeddings().embedding_dim)
    calls: list[int] = []
    monkeypatch.setattr(selector_module, "sample_queries",
                        lambda m, batch: calls.append(len(batch["input_ids"])) or sample_queries(m, batch))
    first = collator.train_batch(rows[:4])
    image, text = selector.queries(model, first, rows[:4])
    fresh_image, fresh_text = sample_queries(model, first)
    assert torch.equal(image, fresh_image) and torch.equal(text, fresh_text)
    # rows 2-3 known, 4-5 new: one pass over the batch, and rows 2-3 keep their first values
    image, text = selector.queries(model, collator.train_batch(rows[2:6]), rows[2:6])
    assert torch.equal(image[:2], fresh_image[2:4]) and torch.equal(text[:2], fresh_text[2:4])
    # every row known: no pass, in a training batch or an evaluation one
    selector.queries(model, collator.train_batch(rows[:6]), rows[:6])
    selector.queries(model, collator.generation_batch([{"image": r["image"], "instruction": r["instruction"]}
                                                       for r in rows[:6]]), rows[:6])
    assert calls == [4, 4]
    # an evaluation batch's own queries equal the training batch's: the instruction's tokens, no answer
    evaluation = sample_queries(model, collator.generation_batch([{"image": r["image"], "instruction": r["instruction"]}
                                                                 for r in rows[:4]]))
    torch.testing.assert_close(evaluation[1], fresh_text, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(evaluation[0], fresh_image, rtol=1e-5, atol=1e-5)
