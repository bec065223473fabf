"""Each new baseline's mechanism held to numbers on mcit-tiny itself, trained for real on the quick
two-task slice: what the property tests show on hand-made matrices, shown on the model."""

import pytest
import torch
from accelerate import Accelerator

from mcit_bench.config import TrainingConfig
from mcit_bench.engine.train import train_stage
from tests.conformance.test_methods import set_up

pytestmark = pytest.mark.slow


def test_keeplora_trained_update_leaves_the_protected_space_alone(cache_root):
    stream, _, method, model, collator, run = set_up("keeplora", cache_root)
    stages = method.stages(stream)
    for stage in stages:
        method.before_task(stage, run)
        protected = {name: space.clone() for name, space in method.spaces.items()}
        train_stage(model, method, stage, run, collator, TrainingConfig(steps_per_task=2), stream.task_steps(),
                    Accelerator(cpu=True))
        task = stage.index - 1
        for name, layer in method.layers.items():
            update = (layer.lora_B[task] @ layer.lora_A[task]).detach()
            assert update.abs().max() > 0, name  # B trained
            assert (update @ protected[name].T).abs().max() < 1e-6, name
        method.after_task(stage, run)
        # the space grew by the task's gradient directions, and still holds what it held
        for name, space in method.spaces.items():
            assert len(space) >= len(protected[name])
            torch.testing.assert_close(space[: len(protected[name])], protected[name])


def test_mrlora_router_finds_the_task_when_only_the_instruction_differs(cache_root):
    """Two tasks on the same images, told apart by their instruction alone: after training on its
    stored samples, the router LoRA answers the right expert for held-out samples of both."""
    stream, _, method, model, collator, run = set_up("mrlora", cache_root)
    # enough steps for mcit-tiny to learn a two-word difference (measured: chance after 80 steps)
    method.options = method.options.model_copy(update={"router_epochs": 30, "router_lr": 2e-3,
                                                       "router_batch_size": 8})
    images = [row["image"] for row in run.train_data["imagenet"]]
    assert len(images) >= 30
    instructions = {"imagenet": "What object is shown?", "textvqa": "What text is written?"}
    run.train_data = {task: [{"image": image, "instruction": instruction, "target": "x"} for image in images]
                      for task, instruction in instructions.items()}
    method.tasks = list(stream.tasks)  # the router needs no expert to have trained
    method.memory = {task: list(range(20)) for task in instructions}
    method.train_router(run)
    model.eval()
    held_out = [{"image": image, "instruction": instructions[task]} for task in instructions for image in images[20:30]]
    chosen = method.ask_router(held_out, run)
    assert chosen == [0] * 10 + [1] * 10


def trained_reading_the_guide(name: str, cache_root):
    """``name`` trained on the quick two-task slice, every image its guide read checked to be a training
    image, and two test prompts of each task: (method, model, collator, run, rows)."""
    from mcit_bench.engine.generate import test_rows as evaluation_rows

    stream, test_sets, method, model, collator, run = set_up(name, cache_root)
    read: list[str] = []
    features = run.guide.features
    run.guide.features = lambda rows: read.extend(str(row["image"]) for row in rows) or features(rows)
    for stage in method.stages(stream):
        method.before_task(stage, run)
        train_stage(model, method, stage, run, collator, TrainingConfig(steps_per_task=4, lr=1e-2),
                    stream.task_steps(), Accelerator(cpu=True))
        method.after_task(stage, run)
    assert read and all("/images/train-" in path for path in read)
    rows = [{"image": row["image"], "instruction": row["instruction"]}
            for task in ("imagenet", "textvqa") for row in evaluation_rows(test_sets[task])[:2]]
    return method, model, collator, run, rows


@pytest.mark.parametrize("name", ["disco", "hide"])
def test_guided_methods_route_each_sample_as_if_it_were_alone_and_read_no_test_sample_in_training(name, cache_root):
    """The official codes route a batch by its mean (DISCO) or its most similar sample (HiDe-LLaVA) and
    evaluate one sample a batch; routing each sample of a batch by its own features gives each the logits
    it gets alone. The prototypes come from the training split: every image the guide read while
    training is a training image."""
    method, model, collator, run, rows = trained_reading_the_guide(name, cache_root)
    assert [len(method.prototypes[kind]) for kind in ("image", "text")] == [2, 2]  # one of each a task
    model.eval()
    with torch.no_grad():
        batch = collator.generation_batch(rows)
        chosen = method.route(batch, run, None, rows)
        together = model(**batch).logits[:, -1]
        weights = next(layer.block_weights for layer in method.layers.values() if layer.block_weights is not None)
        if name == "hide":  # the last layer mixes the experts, every other fuses them
            assert sum(layer.block_weights is not None for layer in method.layers.values()) == 7
            assert all(layer.fused for layer in method.layers.values() if layer.block_weights is None)
        weights = weights.clone()
        alone = []
        for row in rows:
            one = collator.generation_batch([row])
            method.route(one, run, None, [row])
            alone.append(model(**one).logits[0, -1])
    assert chosen.tolist() == [0, 0, 1, 1]  # the guide tells the quick slice's two tasks apart
    if name == "hide":  # Prism's fusion: each expert's own update summed, below the last layer
        method.options = method.options.model_copy(update={"fusion": "updates"})
        method.route(batch, run, None, rows)
        below = [layer for layer in method.layers.values() if not torch.equal(layer.block_weights, weights)]
        assert len(below) == len(method.layers) - 7
        assert all(layer.block_weights.tolist() == [[1.0, 1.0]] and not layer.fused for layer in below)
    assert not torch.allclose(weights[0], weights[2])  # the samples really are routed apart
    torch.testing.assert_close(together, torch.stack(alone), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["smolora", "modalprompt", "same"])
def test_the_other_guided_methods_read_only_training_samples_and_route_each_sample_as_if_alone(name, cache_root):
    """SMoLoRA's instruction router, ModalPrompt's prompt choice and SAME's task mixture read the guide: in
    training only training samples, and at evaluation each sample's own features, so a batch answers as its
    samples would alone (ModalPrompt's prompt goes after each sample's first token, whatever its padding;
    SAME's gate mean reads each sample's own tokens, padding excluded, as the original's batch of one)."""
    method, model, collator, run, rows = trained_reading_the_guide(name, cache_root)
    model.eval()
    with torch.no_grad():
        batch = collator.generation_batch(rows)
        chosen = method.route(batch, run, None, rows)
        together = model(**batch).logits[:, -1]
        alone = []
        for row in rows:
            one = collator.generation_batch([row])
            method.route(one, run, None, [row])
            alone.append(model(**one).logits[0, -1])
    if name == "modalprompt":
        assert chosen.tolist() == [0, 0, 1, 1]  # the guide tells the quick slice's two tasks apart
    if name == "same":  # the mixture puts each sample's weight on its own task's expert
        method.route(batch, run, None, rows)
        assert method.state.prior.argmax(dim=1).tolist() == [0, 0, 1, 1]
        assert method.state.prior.shape == (4, 2) and torch.all(method.state.prior.max(dim=1).values > 0.9)
    torch.testing.assert_close(together, torch.stack(alone), atol=1e-5, rtol=1e-5)


def test_ewc_fisher_from_whole_batches_is_the_one_batches_of_one_sample_give(cache_root):
    """On mcit-tiny at its real image size, LoRA and projector trainable: the Fisher read per sample from
    batches of 16 (and a last one of 8) against each sample's own backward, one at a time."""
    from mcit_bench.methods.base import rows_of, training_batch
    from mcit_bench.methods.gradients import answer_nll_each

    stream, _, method, model, collator, run = set_up("ewc", cache_root)
    method.options = method.options.model_copy(update={"fisher_samples": 24, "fisher_batch_size": 16})
    torch.manual_seed(0)
    with torch.no_grad():  # B = 0 at the start would leave every A without a gradient
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    stage = method.stages(stream)[0]
    fisher = method.fisher(stage, run)
    params = method.trainable()
    assert any("lora_A" in name for name in fisher) and any("multi_modal_projector" in name for name in fisher)
    data = method.train_data(stage, run)
    indices = torch.randperm(len(data), generator=torch.Generator().manual_seed(run.seed + stage.index))[:24].tolist()
    assert method.per_sample(run, params, data, indices[:16]) is not None  # read from the whole batch
    expected = {name: torch.zeros_like(p) for name, p in params.items()}
    model.train()
    for index in indices:
        model.zero_grad(set_to_none=True)
        batch = training_batch(run, rows_of(data, [index]))
        nll = answer_nll_each(batch, model(**batch))[0]
        nll.backward()
        for name, p in params.items():
            expected[name] += torch.exp(-nll.detach()) * p.grad ** 2 / 24
    for name in params:
        assert expected[name].abs().max() > 0, name
        scale = expected[name].abs().max().item()
        torch.testing.assert_close(fisher[name], expected[name], rtol=1e-3, atol=1e-4 * scale)
