"""Real-size inputs on CPU: LLaVA-1.5's 576 image tokens against the sequence limit, text-only batches
that run the vision side anyway, gradients every process reduces alike, usage counted once under
recomputation, and the torch floor of ``--shard``."""

from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mcit_bench.core.errors import ConfigError, DataError
from mcit_bench.core.records import IGNORE_INDEX
from mcit_bench.engine.sharding import check_can_shard, torch_release
from mcit_bench.methods.distributed import row_share
from mcit_bench.models.anatomy import projector, vision_tower
from mcit_bench.models.blank_image import install_blank_image
from mcit_bench.models.collate import InstructionCollator
from mcit_bench.models.loading import load_model, sequence_limit
from mcit_bench.models.tiny_archs import build_tiny_llava15

UNSET = int(1e30)  # what transformers writes into a tokenizer without a limit
WORDS = ["red", "square", "circle", "blue", "the", "is", "left", "of", "green", "small"]


def text_config(positions=None, model_type="qwen2_vl"):
    inner = SimpleNamespace(max_position_embeddings=positions) if positions else SimpleNamespace()
    return SimpleNamespace(model_type=model_type, get_text_config=lambda: inner)


@pytest.mark.parametrize("tokenizer_limit,positions,model_type,expected", [
    (UNSET, 4096, "llava", 2048),  # llava-hf/llava-1.5-7b-hf: CoIN's and LLaVA's training length
    (UNSET, 32768, "qwen2_vl", 32768),  # the config's positions
    (256, 256, "llava", 256),  # mcit-tiny
    (8192, 32768, "qwen2_vl", 8192),  # the tokenizer's own limit
])
def test_the_sequence_limit_follows_the_model(tokenizer_limit, positions, model_type, expected):
    tokenizer = SimpleNamespace(model_max_length=tokenizer_limit)
    assert sequence_limit("m", text_config(positions, model_type), tokenizer) == expected


def test_a_model_that_names_no_limit_is_refused_in_one_sentence():
    with pytest.raises(ConfigError) as error:
        sequence_limit("org/model", text_config(None), SimpleNamespace(model_max_length=UNSET))
    assert str(error.value) == ("model 'org/model' names no sequence length limit (no model_max_length in its "
                                "tokenizer, no max_position_embeddings in its config); pass --max-length N")


@pytest.fixture(scope="module")
def llava15():
    return build_tiny_llava15(0)


def photo() -> Image.Image:
    return Image.new("RGB", (640, 480), (200, 30, 30))  # a COCO-sized photo, padded to a square, resized to 336


def test_a_336_pixel_llava_sample_keeps_its_576_image_tokens_and_only_its_answer_is_cut(llava15):
    model, processor = llava15
    assert sequence_limit("llava", model.config, processor.tokenizer) == 2048
    row = {"id": "q1", "image": photo(), "instruction": "What color is the square?",
           "target": " ".join(WORDS * 3)}
    whole = InstructionCollator(processor, 2048)
    prompt = whole.train_batch([row])["input_ids"].shape[1] - len(whole.answer_ids(row["instruction"], row["target"]))
    collator = InstructionCollator(processor, prompt + 2)
    batch = collator.train_batch([row])
    assert batch["input_ids"].shape == (1, prompt + 2)
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == 576
    assert (batch["labels"][0] != IGNORE_INDEX).nonzero().flatten().tolist() == [prompt, prompt + 1]
    assert collator.cut_samples == 1
    loss = model(**batch).loss  # the model takes it: image features and image tokens match
    assert torch.isfinite(loss)


def test_a_prompt_that_leaves_the_answer_no_room_is_refused_before_training(llava15):
    _, processor = llava15
    row = {"id": "q7", "image": "", "instruction": "What color is the square?", "target": "red"}
    collator = InstructionCollator(processor, 5)
    with pytest.raises(DataError) as error:
        collator.check_fits("sqa", _dataset([row]))
    assert str(error.value).startswith("task 'sqa': sample 'q7' (no image) has a prompt of ")
    assert str(error.value).endswith("and the model takes 5; raise --max-length (if the model's positions allow) "
                                     "or shorten that sample's instruction")


def _dataset(rows):
    import datasets

    return datasets.Dataset.from_list(rows)


@pytest.fixture(scope="module")
def tiny():
    return load_model("mcit-tiny")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(min_value=1, max_value=60), words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=30),
       with_image=st.booleans())
def test_any_limit_either_refuses_or_keeps_the_whole_prompt_and_an_answer_prefix(tiny, limit, words, with_image):
    model, processor = tiny
    image = Image.new("RGB", (64, 64), (0, 0, 255)) if with_image else ""
    row = {"id": "x", "image": image, "instruction": "What color is the square?", "target": " ".join(words)}
    collator = InstructionCollator(processor, limit)
    answer = collator.answer_ids(row["instruction"], row["target"], with_image)
    try:
        batch = collator.train_batch([row])
    except DataError as error:
        assert "has a prompt of" in str(error) and f"the model takes {limit};" in str(error)
        return
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert len(ids) <= limit
    assert ids.count(model.config.image_token_id) == (16 if with_image else 0)
    kept = [token for token, label in zip(ids, labels) if label != IGNORE_INDEX]
    prompt = len(ids) - len(kept)
    assert 1 <= len(kept) and kept == answer[:len(kept)] and all(label == IGNORE_INDEX for label in labels[:prompt])
    assert collator.cut_samples == (1 if len(kept) < len(answer) else 0)


def test_a_text_only_batch_runs_the_vision_side_with_zero_weight():
    model, processor = load_model("mcit-tiny")
    collator = InstructionCollator(processor, 256)
    batch = collator.train_batch([{"image": "", "instruction": "what color is the square?", "target": "red"}])
    plain = model(**batch)
    plain.loss.backward()
    assert all(p.grad is None for p in projector(model).parameters())  # the projector took no part
    model.zero_grad(set_to_none=True)
    install_blank_image(model, collator.blank_image(), torch.device("cpu"))
    runs = []
    handle = vision_tower(model).register_forward_hook(lambda *args: runs.append(1))
    blank = model(**batch)
    assert runs == [1]  # the vision side ran once, on the blank image
    assert torch.equal(blank.logits, plain.logits)  # not one value changed
    blank.loss.backward()
    grads = [p.grad for p in projector(model).parameters()]
    assert all(g is not None and not g.any() for g in grads)  # in the graph, with a zero gradient
    runs.clear()
    with_image = collator.train_batch([{"image": Image.new("RGB", (64, 64)), "instruction": "what color?",
                                        "target": "red"}])
    model(**with_image)
    assert runs == [1]  # a batch with an image: the model's own vision pass, no blank one
    handle.remove()


def test_unreached_gradients_enter_the_reduction_as_zeros_and_stay_none_where_no_process_had_one(tmp_path):
    import torch.distributed as dist

    from mcit_bench.engine.sharding import average_replicated_gradients

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        reached, unreached = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
        reached.grad = torch.tensor([2.0, 4.0, 6.0])
        average_replicated_gradients([reached, unreached], processes=1)
        assert reached.grad.tolist() == [2.0, 4.0, 6.0] and unreached.grad is None
    finally:
        dist.destroy_process_group()


@given(rows=st.integers(min_value=0, max_value=300), world=st.integers(min_value=1, max_value=16))
def test_the_row_shares_of_every_process_cover_each_row_once(rows, world):
    covered = [row for rank in range(world) for row in range(rows)[row_share(rows, world, rank)]]
    assert covered == list(range(rows))


def test_branch_usage_is_counted_once_when_checkpointing_recomputes_the_forward():
    from torch.utils.checkpoint import checkpoint

    from mcit_bench.adapters.experts import BranchLoRA, Routing

    routing = Routing()
    layer = BranchLoRA(8, 8, branches=4, rank=2, alpha=4.0, top_k=2, routing=routing)
    layer.add_router(torch.Generator().manual_seed(0))
    layer.train()
    x = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    routing.micro_batch += 1  # what BranchLoRA's before_step does for each micro-batch
    checkpoint(layer, x, use_reentrant=False).sum().backward()  # forward, and forward again in backward
    assert layer.usage.sum().item() == pytest.approx(6.0)  # 2 samples x 3 tokens, each gate set summing to 1


@pytest.mark.parametrize("version,refused", [("2.7.1", True), ("2.8.0", False), ("2.13.0+cpu", False)])
def test_shard_refuses_a_torch_older_than_its_floor(version, refused):
    assert torch_release("2.13.0+cpu") == (2, 13)
    if refused:
        with pytest.raises(ConfigError) as error:
            check_can_shard("seqft", True, 2, False, torch_version=version)
        assert str(error.value) == ("--shard fsdp needs torch 2.8 or newer (FSDP2 with ignored parameters and one "
                                    "root over the model), and this is torch 2.7.1; upgrade torch or drop --shard")
    else:
        check_can_shard("seqft", True, 2, False, torch_version=version)
