"""Conformance of every registered method, generated from the registry: a method added later gets
these tests with no edit. Each runs a quick two-task slice of synth-coin on mcit-tiny."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from mcit_bench.config import RunConfig, TrainingConfig
from mcit_bench.data.prepare import prepare_data_root
from mcit_bench.data.run_data import load_stream_data
from mcit_bench.data.stream import load_stream
from mcit_bench.engine.generate import generate_answers
from mcit_bench.engine.generate import test_rows as evaluation_rows  # not named test_*: pytest would collect it
from mcit_bench.engine.run import run_stream
from mcit_bench.engine.train import train_stage
from mcit_bench.methods.base import RunContext
from mcit_bench.methods.registry import METHODS, build_method
from mcit_bench.models.collate import InstructionCollator
from mcit_bench.models.guide import TINY_GUIDE, GuideEncoder
from mcit_bench.models.loading import load_model
from mcit_bench.results.scoring import rescore_run
from tests.conftest import FIXTURES, QUICK_OPTIONS

SEQUENCE = str(FIXTURES / "two_task_quick.yaml")
ALL_METHODS = METHODS.names()
SELECTING = {name for name in METHODS.names() if METHODS.get(name).capabilities.selects_task}

pytestmark = pytest.mark.slow


def test_the_nine_methods_are_registered():
    assert set(ALL_METHODS) >= {"seqft", "joint", "ewc", "lwf", "replay", "expansion", "moelora", "branchlora",
                                "dmole"}


def set_up(name: str, cache_root):
    """The two-task stream's data, mcit-tiny with ``name`` set up on it, and the context its hooks read."""
    stream = load_stream(SEQUENCE)
    root = prepare_data_root(stream, None, cache_root)
    train_sets, test_sets = load_stream_data(stream, root, cache_root)
    torch.manual_seed(0)
    model, processor = load_model("mcit-tiny")
    collator = InstructionCollator(processor, processor.tokenizer.model_max_length)
    method = build_method(RunConfig(method=name, sequence=SEQUENCE, method_options=QUICK_OPTIONS.get(name, {})))
    guide = GuideEncoder(TINY_GUIDE) if method.capabilities.needs_guide else None
    run = RunContext(stream=stream, seed=0, train_data=train_sets, collator=collator, guide=guide)
    return stream, test_sets, method, method.setup(model, run), collator, run


def drive(name: str, cache_root) -> list[dict]:
    """Train every stage of the two-task stream by hand and record what each stage did to the weights."""
    stream, _, method, model, collator, run = set_up(name, cache_root)
    train_sets = run.train_data
    accelerator = Accelerator(cpu=True)
    log = []
    for stage in method.stages(stream):
        method.before_task(stage, run)
        frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        data_size = len(method.train_data(stage, run))
        stats = train_stage(model, method, stage, run, collator, TrainingConfig(), stream.task_steps(), accelerator)
        params = dict(model.named_parameters())
        log.append({
            "stage": stage,
            "moved_frozen": [n for n, v in frozen.items() if not torch.equal(params[n].detach(), v)],
            "moved_trainable": [n for n, v in trainable.items() if not torch.equal(params[n].detach(), v)],
            "hand_count": sum(v.numel() for v in trainable.values()),
            "reported_count": stats.trainable_params,
            "total_params": sum(p.numel() for p in model.parameters()),
            "data_size": data_size,
            "kept": sum(len(kept) for kept in method.kept_samples().values()),
            "own_size": sum(len(train_sets[t.name]) for t in stage.tasks),
        })
        method.after_task(stage, run)
    return log


@pytest.fixture(scope="module")
def driven(cache_root):
    return {}


def driven_log(driven, name, cache_root):
    if name not in driven:
        driven[name] = drive(name, cache_root)
    return driven[name]


@pytest.mark.parametrize("name", ALL_METHODS)
def test_frozen_parameters_stay_bit_identical_through_each_task(name, driven, cache_root):
    for entry in driven_log(driven, name, cache_root):
        assert entry["moved_frozen"] == [], f"{name} stage {entry['stage'].index} moved frozen weights"
        assert entry["moved_trainable"], f"{name} stage {entry['stage'].index} trained nothing"


@pytest.mark.parametrize("name", ALL_METHODS)
def test_parameter_accounting_equals_a_count_by_hand(name, driven, cache_root):
    for entry in driven_log(driven, name, cache_root):
        assert entry["reported_count"] == entry["hand_count"]


@pytest.mark.parametrize("name", ALL_METHODS)
def test_declared_capabilities_are_honest(name, driven, cache_root):
    log = driven_log(driven, name, cache_root)
    capabilities = METHODS.get(name).capabilities
    assert capabilities.task_id_at_eval is False  # every built-in method evaluates without the task label
    assert capabilities.upper_bound == (len(log) == 1)
    if not capabilities.upper_bound:
        grew = log[1]["total_params"] > log[0]["total_params"]
        assert capabilities.grows_params == grew
        # a method that keeps past samples says so, whether it trains on them (replay) or not (a router's memory)
        assert capabilities.uses_memory == (log[1]["kept"] > 0)
        if log[1]["data_size"] > log[1]["own_size"]:
            assert capabilities.uses_memory


def quick_config(name: str) -> RunConfig:
    return RunConfig(method=name, sequence=SEQUENCE, seed=0, method_options=QUICK_OPTIONS.get(name, {}))


@pytest.fixture(scope="module")
def whole_runs(tmp_path_factory, cache_root):
    """Each method's uninterrupted run of the slice, made once for the tests that read it: its results
    and its run directory."""
    made: dict[str, tuple[dict, Path]] = {}

    def whole_run(name: str) -> tuple[dict, Path]:
        if name not in made:
            out = tmp_path_factory.mktemp(f"whole-{name}")
            made[name] = (run_stream(quick_config(name), out, cache_root=cache_root),
                          out / "two-task-quick" / name / "seed0")
        return made[name]

    return whole_run


@pytest.mark.parametrize("name", ALL_METHODS)
def test_resumed_run_gives_the_uninterrupted_matrix(name, tmp_path, cache_root, whole_runs):
    config = quick_config(name)
    whole, _ = whole_runs(name)
    if METHODS.get(name).capabilities.upper_bound:  # one stage: nothing to resume
        assert len(whole["stages"]) == 1 and whole["run"]["upper_bound"]
        return
    partial = run_stream(config, tmp_path / "split", cache_root=cache_root, stop_after_stage=1)
    assert partial is None
    resumed = run_stream(config, tmp_path / "split", cache_root=cache_root, resume=True)
    np.testing.assert_array_equal(np.array(resumed["matrix"]), np.array(whole["matrix"]))
    assert resumed["cost"]["added_params"] == whole["cost"]["added_params"]
    assert [s["trainable_params"] for s in resumed["stages"]] == [s["trainable_params"] for s in whole["stages"]]
    if name in SELECTING:
        selection = whole["stages"][-1]["task_selection"]
        assert set(selection) == {"imagenet", "textvqa"} and all(0 <= v <= 100 for v in selection.values())
        assert resumed["oracle"] == whole["oracle"]
    else:
        assert all(stage["task_selection"] == {} for stage in whole["stages"])
        assert "oracle" not in whole
        assert whole["cost"]["oracle_seconds"] == 0.0  # no oracle pass: the wall time is all the method's


@pytest.mark.parametrize("name", sorted(SELECTING))
def test_oracle_routing_is_evaluated_beside_the_selectors_choice(name, whole_runs):
    results, run_dir = whole_runs(name)
    routed, oracle = results["matrix"], results["oracle"]["matrix"]
    assert oracle[0] == routed[0]  # the base model has no route to choose
    assert oracle[1][1] == routed[1][1]  # textvqa is not trained after stage 1: its routed cell stays
    # after stage 1 there is one task to choose: the oracle and the selector answer identically
    oracle_file = run_dir / "predictions-oracle" / "stage1" / "imagenet.jsonl"
    assert oracle_file.read_bytes() == (run_dir / "predictions" / "stage1" / "imagenet.jsonl").read_bytes()
    assert not (run_dir / "predictions-oracle" / "stage1" / "textvqa.jsonl").exists()
    for position, task in enumerate(results["tasks"]):  # a task the selector always found scores alike
        if results["stages"][-1]["task_selection"][task] == 100.0:
            assert oracle[2][position] == routed[2][position]
    rescored, changes = rescore_run(run_dir)
    assert rescored["oracle"] == results["oracle"] and changes == []
    # the run's oracle time is the stages' sum, a part of what its wall time spent outside training
    per_stage = [stage["oracle_seconds"] for stage in results["stages"]]
    assert len(per_stage) == 2 and all(seconds >= 0 for seconds in per_stage)
    assert results["cost"]["oracle_seconds"] == pytest.approx(sum(per_stage), abs=0.011)
    assert results["cost"]["oracle_seconds"] < results["cost"]["wall_seconds"] - results["cost"]["train_seconds"]


BY_CHOICE = ["branchlora", "dmole", "expansion", "modalprompt", "mrlora"]


def test_the_methods_that_route_by_choice_alone_say_so():
    declared = {name for name in SELECTING
                if build_method(RunConfig(method=name, sequence=SEQUENCE)).routes_by_choice_alone()}
    assert declared == set(BY_CHOICE)  # DISCO and HiDe-LLaVA mix the tasks' blocks by their similarities
    assert not build_method(RunConfig(method="dmole", sequence=SEQUENCE,
                                      method_options={"vote": "batch"})).routes_by_choice_alone()


@pytest.mark.parametrize("name", BY_CHOICE)
def test_where_the_choice_is_right_the_oracle_answers_as_the_routed_run(name, cache_root):
    """What lets the harness reuse a routed answer as the oracle's: generated again with the true task's
    route, every row the selector sent to its own task gets the same answer."""
    stream, test_sets, method, model, collator, run = set_up(name, cache_root)
    for stage in method.stages(stream):
        method.before_task(stage, run)
        train_stage(model, method, stage, run, collator, TrainingConfig(steps_per_task=4, lr=1e-2),
                    stream.task_steps(), Accelerator(cpu=True))
        method.after_task(stage, run)
    compared = 0
    for position, task in enumerate(stream.task_names):
        rows = evaluation_rows(test_sets[task])[:6]
        routed, chosen = generate_answers(model, collator, rows, 4, 8, method, run)
        oracle, _ = generate_answers(model, collator, rows, 4, 8, method, run, oracle_task=position)
        right = [i for i, c in enumerate(chosen) if c == position]
        assert [oracle[i] for i in right] == [routed[i] for i in right]
        compared += len(right)
    assert compared >= 3  # rows compared (MR-LoRA's briefly trained router finds three of twelve)


@pytest.mark.parametrize("name", sorted(SELECTING))
def test_an_oracle_route_is_followed_exactly(name, cache_root):
    stream, test_sets, method, model, collator, run = set_up(name, cache_root)
    for stage in method.stages(stream):
        method.before_task(stage, run)
        train_stage(model, method, stage, run, collator, TrainingConfig(steps_per_task=1), stream.task_steps(),
                    Accelerator(cpu=True))
        method.after_task(stage, run)
    rows = [{"image": row["image"], "instruction": row["instruction"]}
            for row in evaluation_rows(test_sets["imagenet"])[:3]]
    model.eval()
    batch = collator.generation_batch(rows)
    wanted = torch.tensor([1, 0, 1])
    assert method.route(batch, run, wanted).tolist() == [1, 0, 1]
    if hasattr(method, "routing"):  # what every adapter layer reads: the chosen task, or each block's weight
        assert method.routing.task_ids.tolist() == [1, 0, 1]
    elif hasattr(method, "splice"):  # ModalPrompt: each sample's inserted prompt is the chosen task's
        _, spliced = method.splice
        assert all(torch.equal(spliced[i], method.model.modal_prompts[t]) for i, t in enumerate([1, 0, 1]))
    else:  # every layer that mixes the blocks (all of DISCO's, HiDe-LLaVA's last) weighs the chosen one alone
        mixing = [layer.block_weights.tolist() for layer in method.layers.values() if layer.block_weights is not None]
        assert mixing and all(weights == [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]] for weights in mixing)
