"""LwF's teacher answers each training sample once a stage, in evaluation mode: a sample drawn again reads
the kept logits, a batch of answered and unanswered samples answers only the latter, and every way gives
the loss of one evaluation-mode teacher forward over the whole batch."""

import pytest
import torch
from mcit_bench.baselines.lwf import answer_logits, distillation_kl
from torch.func import functional_call

from mcit_bench.config import RunConfig
from mcit_bench.data.prepare import prepare_data_root
from mcit_bench.data.run_data import load_stream_data
from mcit_bench.data.stream import load_stream
from mcit_bench.methods.base import RunContext, Stage, rows_of, training_batch
from mcit_bench.methods.registry import build_method
from mcit_bench.models.collate import InstructionCollator
from mcit_bench.models.loading import load_model
from tests.conftest import FIXTURES

SEQUENCE = str(FIXTURES / "two_task_quick.yaml")


@pytest.fixture
def lwf_in_stage_two(cache_root):
    """LwF set up on mcit-tiny with a teacher unlike the student (stage 2), and the context."""
    def build(**options):
        stream = load_stream(SEQUENCE)
        root = prepare_data_root(stream, None, cache_root)
        train_sets, _ = load_stream_data(stream, root, cache_root)
        torch.manual_seed(0)
        model, processor = load_model("mcit-tiny")
        run = RunContext(stream=stream, seed=0, train_data=train_sets,
                         collator=InstructionCollator(processor, processor.tokenizer.model_max_length))
        method = build_method(RunConfig(method="lwf", sequence=SEQUENCE, method_options=options))
        model = method.setup(model, run)
        with torch.no_grad():  # a trained-looking student: LoRA B away from zero
            for name, parameter in model.named_parameters():
                if parameter.requires_grad:
                    parameter.add_(torch.randn_like(parameter) * 0.05)
        method.before_task(Stage(2, (stream.tasks[1],)), run)
        with torch.no_grad():  # the student moves on from the teacher
            for name, parameter in model.named_parameters():
                if parameter.requires_grad:
                    parameter.add_(torch.randn_like(parameter) * 0.05)
        rows = rows_of(train_sets[stream.tasks[1].name], list(range(6)))
        return method, model, run, rows
    return build


def loss_of(method, model, run, rows) -> tuple[torch.Tensor, torch.Tensor]:
    """(LwF's loss term through its hooks, the same KL from one evaluation-mode teacher pass)."""
    batch = training_batch(run, rows)
    model.train()
    method.before_step(batch, run, rows)
    outputs = model(**batch)
    term = method.loss(batch, outputs, run)["lwf"]
    model.eval()
    with torch.no_grad():
        teacher = functional_call(model, method.teacher, args=(), kwargs=batch, strict=False).logits
    model.train()
    expected = method.options.lwf_lambda * distillation_kl(outputs.logits, answer_logits(teacher, batch["labels"]),
                                                           batch["labels"], method.options.temperature)
    return term, expected


def counting(method) -> list[int]:
    calls: list[int] = []
    answer = method.teacher_answers
    method.teacher_answers = lambda batch: calls.append(batch["input_ids"].shape[0]) or answer(batch)
    return calls


def test_each_sample_is_answered_once_and_every_way_gives_the_whole_batch_teachers_loss(lwf_in_stage_two):
    method, model, run, rows = lwf_in_stage_two()
    calls = counting(method)
    term, expected = loss_of(method, model, run, rows[:4])  # four new samples: the batch itself
    torch.testing.assert_close(term, expected, rtol=1e-5, atol=1e-6)
    term, expected = loss_of(method, model, run, rows[2:6])  # two kept, two new: a batch of the two
    torch.testing.assert_close(term, expected, rtol=1e-5, atol=1e-6)
    term, expected = loss_of(method, model, run, rows[:6])  # all kept: no teacher pass
    torch.testing.assert_close(term, expected, rtol=1e-5, atol=1e-6)
    assert calls == [4, 2] and len(method.answers) == 6
    assert float(expected.detach()) > 0


def test_without_room_to_keep_answers_the_teacher_answers_every_draw_alike(lwf_in_stage_two):
    method, model, run, rows = lwf_in_stage_two(teacher_cache_mb=0)
    calls = counting(method)
    for _ in range(2):
        term, expected = loss_of(method, model, run, rows[:4])
        torch.testing.assert_close(term, expected, rtol=1e-5, atol=1e-6)
    assert calls == [4, 4] and method.answers == {}


def test_a_new_stage_forgets_the_last_teachers_answers(lwf_in_stage_two):
    method, model, run, rows = lwf_in_stage_two()
    loss_of(method, model, run, rows[:4])
    assert len(method.answers) == 4
    method.before_task(Stage(3, (run.stream.tasks[1],)), run)
    assert method.answers == {} and method.kept_bytes == 0
