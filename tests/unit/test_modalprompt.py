"""ModalPrompt's mechanisms with numbers (MCITlib ModalPrompt/llava/model/llava_arch.py lines 202-269):
where the prompt goes in a right- and a left-padded batch, the rows the embeddings then carry, the
prototypes and the two alignment losses by hand, and the nearest prototype's choice at inference."""

import pytest
import torch
from mcit_bench.baselines.modalprompt import insert_after_first
from torch.nn import functional as F

from mcit_bench.config import RunConfig
from mcit_bench.core.records import IGNORE_INDEX
from mcit_bench.data.stream import load_stream
from mcit_bench.methods.base import RunContext, Stage
from mcit_bench.methods.registry import build_method
from mcit_bench.models.anatomy import language_model
from mcit_bench.models.loading import load_model


def test_the_prompt_goes_right_after_each_sample_s_first_token():
    batch = {"input_ids": torch.tensor([[5, 6, 7, 0], [0, 0, 8, 9]]),  # right- and left-padded
             "attention_mask": torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1]]),
             "labels": torch.tensor([[-100, -100, 7, -100], [-100, -100, -100, 9]]),
             "mm_token_type_ids": torch.tensor([[0, 1, 0, 0], [0, 0, 1, 0]]),
             "pixel_values": torch.zeros(2, 3, 4, 4)}
    inserted = insert_after_first(batch, 2)
    assert inserted.tolist() == [[False, True, True, False, False, False], [False, False, False, True, True, False]]
    assert batch["input_ids"].tolist() == [[5, 5, 5, 6, 7, 0], [0, 0, 8, 8, 8, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[-100] * 4 + [7, -100], [-100] * 5 + [9]]
    assert batch["mm_token_type_ids"].tolist() == [[0, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0]]
    assert batch["pixel_values"].shape == (2, 3, 4, 4)  # not aligned with the tokens: untouched
    assert all(value == IGNORE_INDEX for value in batch["labels"][inserted].tolist())


class FixedGuide:
    """A guide whose features are given: (image, text) per sample, by the sample's instruction."""

    width = 4

    def __init__(self, features: dict[str, tuple[list[float], list[float]]]) -> None:
        self.table = features

    def features(self, rows):
        image = torch.tensor([self.table[row["instruction"]][0] for row in rows])
        text = torch.tensor([self.table[row["instruction"]][1] for row in rows])
        return F.normalize(image, dim=-1), F.normalize(text, dim=-1)


@pytest.fixture
def method_and_model():
    stream = load_stream("synth-coin", subset="ci")
    torch.manual_seed(0)
    model, _ = load_model("mcit-tiny")
    method = build_method(RunConfig(method="modalprompt", method_options={"prefix_len": 3}))
    guide = FixedGuide({"a": ([1.0, 0, 0, 0], [0, 1.0, 0, 0]), "b": ([0, 0, 1.0, 0], [0, 0, 0, 1.0])})
    run = RunContext(stream=stream, seed=0, guide=guide)
    model = method.setup(model, run)
    for index in (1, 2):
        method.before_task(Stage(index, (stream.tasks[index - 1],)), run)
    return method, model, run


def test_the_embeddings_carry_the_prompt_rows_on_the_inserted_positions_only(method_and_model):
    method, model, run = method_and_model
    embed = language_model(model).get_input_embeddings()
    batch = {"input_ids": torch.tensor([[3, 4, 5], [3, 6, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}
    plain = embed(batch["input_ids"]).detach()
    method.place(batch, torch.tensor([1, 0]))
    out = embed(batch["input_ids"])
    prompts = method.model.modal_prompts
    assert torch.equal(out[0, 1:4], prompts[1].detach()) and torch.equal(out[1, 1:4], prompts[0].detach())
    assert torch.equal(out[0, [0, 4, 5]], plain[0]) and torch.equal(out[1, [0, 4, 5]], plain[1])
    step = torch.tensor([[7], [8]])  # a decoding step: one new token, no prompt
    assert torch.equal(embed(step), embed.weight[step].detach())
    out.sum().backward()  # the inserted rows carry the current task's prompt's gradient
    assert prompts[1].grad is not None and prompts[0].grad is None  # task 1 (the second) trains now


def test_prototypes_and_alignment_losses_by_hand(method_and_model):
    method, model, run = method_and_model
    transform, prompt = method.model.modal_transforms[1], method.model.modal_prompts[1]
    expected = transform(prompt).mean(dim=0)
    torch.testing.assert_close(method.prototypes(2)[1], expected)
    batch = {"input_ids": torch.tensor([[3, 4]]), "attention_mask": torch.tensor([[1, 1]]),
             "labels": torch.tensor([[-100, 4]])}
    method.before_step(batch, run, [{"image": "", "instruction": "a"}])
    terms = method.loss(batch, None, run)
    image, text = torch.tensor([[1.0, 0, 0, 0]]), torch.tensor([[0, 1.0, 0, 0]])
    assert terms["image_alignment"].item() == pytest.approx(1 - F.cosine_similarity(image, expected[None]).item(),
                                                            abs=1e-6)
    assert terms["text_alignment"].item() == pytest.approx(1 - F.cosine_similarity(text, expected[None]).item(),
                                                           abs=1e-6)
    assert batch["input_ids"].shape == (1, 5)  # the current task's prompt went in


def test_inference_picks_the_prompt_of_the_nearest_prototype(method_and_model):
    method, model, run = method_and_model
    with torch.no_grad():  # task 0's prototype points at sample a's features, task 1's at b's
        for task, target in ((0, [1.0, 1.0, 0, 0]), (1, [0, 0, 1.0, 1.0])):
            last = method.model.modal_transforms[task][2]
            last.weight.zero_()
            last.bias.copy_(torch.tensor(target))
    rows = [{"image": "", "instruction": "b"}, {"image": "", "instruction": "a"}]
    batch = {"input_ids": torch.tensor([[3, 4], [3, 5]]), "attention_mask": torch.ones(2, 2, dtype=torch.long)}
    assert method.route(batch, run, samples=rows).tolist() == [1, 0]
    assert batch["input_ids"].shape == (2, 5)
    # 0.5 cos(image) + 0.5 cos(text) to each prototype: by hand for sample a, task 0
    prototype = torch.tensor([1.0, 1.0, 0, 0])
    coef = 0.5 * F.cosine_similarity(torch.tensor([1.0, 0, 0, 0]), prototype, dim=0) + \
        0.5 * F.cosine_similarity(torch.tensor([0, 1.0, 0, 0]), prototype, dim=0)
    assert coef.item() == pytest.approx(2 ** -0.5)
