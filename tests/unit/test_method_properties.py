"""The properties METHODS.md asks of each method, on small hand-made inputs."""

import pytest
import torch
from mcit_bench.baselines.dmole import NO_TASK, allocate, vote_routes
from mcit_bench.baselines.lwf import answer_logits, distillation_kl
from mcit_bench.baselines.replay import Replay, ReplayOptions

from mcit_bench.config import RunConfig
from mcit_bench.core.errors import ConfigError
from mcit_bench.core.records import IGNORE_INDEX
from mcit_bench.data.stream import TaskDef
from mcit_bench.methods.base import RunContext, Stage
from mcit_bench.methods.registry import build_method
from mcit_bench.methods.selector import KeySelector


def test_lwf_kl_is_zero_when_student_equals_teacher_and_positive_otherwise():
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[:, 3:] = 1  # positions 2 and 3 predict answer tokens
    teacher = answer_logits(logits, labels)
    assert teacher.shape == (4, 7)  # two answer positions in each of two samples
    assert distillation_kl(logits, teacher, labels, 2.0) == 0
    other = logits.clone()
    other[:, 0] += 5.0  # a position that predicts no answer token: ignored
    assert distillation_kl(other, teacher, labels, 2.0) == 0
    other[:, 2] += torch.arange(7.0)
    assert distillation_kl(other, teacher, labels, 2.0) > 0


def test_ewc_penalty_is_zero_at_the_anchor_and_quadratic_away_from_it():
    method = build_method(RunConfig(method="ewc", method_options={"ewc_lambda": 4.0}))
    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    method.model = torch.nn.Module()
    method.model.register_parameter("w", weight)
    method.anchor = {"w": weight.detach().clone()}
    method.importance = {"w": torch.tensor([1.0, 3.0])}
    assert method.penalty() == 0
    with torch.no_grad():
        weight += torch.tensor([0.5, -1.0])
    # (lambda / 2) * (1 * 0.25 + 3 * 1.0) = 2 * 3.25
    assert method.penalty().item() == pytest.approx(6.5)


class FakeData(list):
    pass


def replay_after(options: dict, sizes: dict[str, int]) -> dict[str, list[int]]:
    method = Replay(ReplayOptions(**options))
    run = RunContext(stream=None, seed=0, train_data={name: FakeData(range(n)) for name, n in sizes.items()})
    for index, name in enumerate(sizes, start=1):
        method.after_task(Stage(index, (TaskDef(name=name, type="vqa", train="x", test="y"),)), run)
    return method.buffer


def test_replay_ratio_keeps_that_share_of_every_past_task():
    buffer = replay_after({"ratio": 0.01}, {"a": 2000, "b": 500, "c": 1000})
    assert {name: len(kept) for name, kept in buffer.items()} == {"a": 20, "b": 5, "c": 10}
    assert all(len(set(kept)) == len(kept) and max(kept) < n for kept, n in zip(buffer.values(), (2000, 500, 1000)))


def test_replay_balanced_splits_the_total_evenly():
    buffer = replay_after({"mode": "balanced", "buffer_size": 90}, {"a": 100, "b": 100, "c": 100})
    assert {name: len(kept) for name, kept in buffer.items()} == {"a": 30, "b": 30, "c": 30}


def test_replay_reservoir_holds_exactly_the_buffer_size():
    buffer = replay_after({"mode": "reservoir", "buffer_size": 50}, {"a": 100, "b": 300})
    assert sum(len(kept) for kept in buffer.values()) == 50
    assert 25 <= len(buffer["b"]) <= 50  # b is three quarters of the stream


def test_dmole_budget_goes_to_the_top_scored_layers_split_by_modality():
    scores = {"v1": 1.0, "v2": 3.0, "v3": 0.5, "l1": 10.0, "l2": 2.0, "l3": 8.0, "l4": 5.0}
    vision = {"v1", "v2", "v3"}
    # vision holds 4.5 / 29.5 = 15% of the score, below the 25% floor: 1 of 4 slots goes to vision
    assert allocate(scores, vision, 4, 0.25) == ["l1", "l3", "l4", "v2"]
    # without the floor the share rounds to 1 of 4 as well; with a 50% floor vision gets 2
    assert allocate(scores, vision, 4, 0.5) == ["l1", "l3", "v1", "v2"]
    assert allocate(scores, set(), 2, 0.25) == ["l1", "l3"]


# four samples, three past tasks with thresholds 1, 1, 1: sample 0 prefers task 2 then task 0,
# sample 1 only passes task 0, sample 2 passes none, sample 3 prefers task 0 then task 1
ERRORS = torch.tensor([[0.5, 2.0, 0.2], [0.3, 1.0, 1.5], [1.2, 1.1, 3.0], [0.1, 0.4, 2.0]])
THRESHOLDS = torch.ones(3)
N = NO_TASK


def test_dmole_per_sample_routing_takes_the_lowest_error_under_threshold_and_an_older_second():
    # an error equal to its threshold does not pass (the public code's strict <): sample 1, task 1.
    # The second task is the best candidate trained before the first: sample 0 (first 2) gets task 0;
    # sample 3 (first 0) gets none, though task 1 passes: task 0's experts never trained beside it
    first, second = vote_routes(ERRORS, THRESHOLDS, "sample", 0.3, training=False)
    assert first.tolist() == [2, 0, N, 0] and second.tolist() == [0, N, N, N]
    first, second = vote_routes(ERRORS, THRESHOLDS, "sample", 0.3, training=True)
    assert first.tolist() == [2, 0, N, 0] and second.tolist() == [N] * 4


def test_dmole_batch_vote_is_the_public_codes_get_task_ids():
    # valid choices 2, 0, 0: task 0 has 2/3 of the votes, task 2 1/3 >= 0.3 -> both, for the whole batch
    first, second = vote_routes(ERRORS, THRESHOLDS, "batch", 0.3, training=False)
    assert first.tolist() == [0] * 4 and second.tolist() == [2] * 4
    first, second = vote_routes(ERRORS, THRESHOLDS, "batch", 0.4, training=False)
    assert first.tolist() == [0] * 4 and second.tolist() == [N] * 4
    # training: the majority past task joins only with vote_share of the votes
    assert vote_routes(ERRORS, THRESHOLDS, "batch", 0.6, training=True)[0].tolist() == [0] * 4
    assert vote_routes(ERRORS, THRESHOLDS, "batch", 0.7, training=True)[0].tolist() == [N] * 4
    # nobody passes: the base model for all
    assert vote_routes(ERRORS + 5, THRESHOLDS, "batch", 0.3, training=False)[0].tolist() == [N] * 4


def test_key_selector_picks_the_nearest_task_per_sample_without_labels():
    selector = KeySelector(image_dim=3, text_dim=2)
    for _ in range(3):
        selector.add_task(torch.device("cpu"))
    with torch.no_grad():
        for task, (image, text) in enumerate((([1, 0, 0], [1, 0]), ([0, 1, 0], [0, 1]), ([0, 0, 1], [1, 1]))):
            selector.image_keys[task].copy_(torch.tensor(image, dtype=torch.float))
            selector.text_keys[task].copy_(torch.tensor(text, dtype=torch.float))
    queries = (torch.tensor([[0.0, 0.1, 2.0], [3.0, 0.2, 0.0]]), torch.tensor([[1.0, 1.2], [2.0, 0.1]]))
    assert selector.select(queries).tolist() == [2, 0]


def test_key_loss_starts_at_the_data_and_is_zero_on_aligned_queries():
    selector = KeySelector(image_dim=2, text_dim=2)
    selector.add_task(torch.device("cpu"))
    queries = (torch.tensor([[2.0, 0.0], [4.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 3.0]]))
    assert selector.key_loss(queries, 0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("method, options, field", [
    ("branchlora", {"top_k": 9, "branches": 8}, "top_k 9 is above the number of branches"),
    ("branchlora", {"rank": 0}, "rank"),
    ("moelora", {"rank": 10, "experts": 4}, "multiple of experts"),
    ("ewc", {"ewc_lambda": -1.0}, "ewc_lambda"),
    ("lwf", {"lwf_lambda": -0.5}, "lwf_lambda"),
    ("dmole", {"budget_fraction": 1.5}, "budget_fraction"),
    ("replay", {"ratio": 0.0}, "ratio"),
    ("seqft", {"lora_rank": 0}, "lora_rank"),
    ("olora", {"dropout": 1.0}, "dropout"),
    ("olora", {"lambda1": -0.1}, "lambda1"),
])
def test_impossible_hyper_parameters_are_refused_with_the_field_named(method, options, field):
    with pytest.raises(ConfigError, match=field):
        build_method(RunConfig(method=method, method_options=options))


def olora_with_blocks(options: dict, down_projections: list[list[float]]):
    """An O-LoRA method whose one layer (3 inputs, 2 outputs, rank 1) holds the given A rows as its
    blocks, the last one the task being trained."""
    from mcit_bench.adapters.experts import TaskBlocksLoRA

    method = build_method(RunConfig(method="olora", method_options={"rank": 1, **options}))
    layer = TaskBlocksLoRA(3, 2, rank=1, alpha=1.0, dropout=0.0)
    for row in down_projections:
        layer.add_block(torch.Generator().manual_seed(0), torch.device("cpu"))
        with torch.no_grad():
            layer.lora_A[-1].copy_(torch.tensor([row]))
            layer.lora_B[-1].copy_(torch.tensor([[1.0], [-2.0]]))
    method.layers, method.task = {"layer": layer}, len(down_projections) - 1
    return method, layer


def test_olora_orthogonality_is_the_l1_norm_of_old_times_new_and_zero_for_orthogonal_blocks():
    # old rows (1, 2, 0) and (1, 0, 0) against the new (0, 1, 3): products 2 and 0, so |.|_1 = 2, times 0.5
    method, _ = olora_with_blocks({}, [[1.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    assert method.penalties()["orthogonal"].item() == pytest.approx(1.0)
    method, _ = olora_with_blocks({}, [[1.0, 2.0, 0.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 3.0]])
    assert method.penalties()["orthogonal"].item() == pytest.approx(1.0)  # absolute values: signs do not cancel
    method, _ = olora_with_blocks({}, [[1.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    assert method.penalties()["orthogonal"].item() == 0
    method, _ = olora_with_blocks({}, [[0.0, 1.0, 3.0]])  # the first task has nothing to be orthogonal to
    assert "orthogonal" not in method.penalties()


def test_olora_l2_term_is_the_frobenius_norm_of_the_new_block_only():
    # new A (0, 3, 4): norm 5; new B (1, -2): norm sqrt(5); the old block's norms do not count
    method, _ = olora_with_blocks({"lambda1": 0.0, "lambda2": 2.0}, [[7.0, 7.0, 7.0], [0.0, 3.0, 4.0]])
    assert set(method.penalties()) == {"l2"}
    assert method.penalties()["l2"].item() == pytest.approx(2.0 * (5.0 + 5.0 ** 0.5))


def test_olora_forward_sums_every_block_at_one_scale():
    from mcit_bench.adapters.experts import TaskBlocksLoRA

    _, layer = olora_with_blocks({}, [[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]])
    x = torch.tensor([[1.0, 1.0, 1.0]])
    # blocks: A x = 3 and 4, each through B = (1, -2): (7, -14), at alpha / rank = 1
    assert layer(x).tolist() == [[7.0, -14.0]]
    assert TaskBlocksLoRA(3, 2, 1, 1.0, 0.0)(x).tolist() == [[0.0, 0.0]]  # no task yet: the base model


def test_a_folded_block_moves_into_the_weight_and_leaves_the_forward():
    from mcit_bench.adapters.experts import TaskBlocksLoRA, attach_adapters

    linear = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.0, 0.5], [0.0, 2.0, 0.0]]))
    layer = attach_adapters(torch.nn.Sequential(linear), ["0"],
                            lambda name, lin: TaskBlocksLoRA(3, 2, rank=1, alpha=2.0, dropout=0.0))["0"]
    for _ in range(2):
        layer.add_block(torch.Generator().manual_seed(0), torch.device("cpu"))
    with torch.no_grad():
        layer.lora_A[0].copy_(torch.tensor([[1.0, 2.0, 0.0]]))
        layer.lora_B[0].copy_(torch.tensor([[1.0], [-2.0]]))
        layer.lora_A[1].copy_(torch.tensor([[0.0, 1.0, 3.0]]))
        layer.lora_B[1].copy_(torch.tensor([[0.5], [0.0]]))
    x = torch.tensor([[1.0, 1.0, 1.0]])
    # W x = (1.5, 2); block 0: 2 * 3 * (1, -2) = (6, -12); block 1: 2 * 4 * (0.5, 0) = (4, 0)
    assert linear(x).tolist() == [[11.5, -10.0]]
    layer.fold_into(linear.weight)
    # scale * B_0 A_0 = 2 * [[1, 2, 0], [-2, -4, 0]] added to W; block 1 alone stays in the forward
    assert linear.weight.tolist() == [[3.0, 4.0, 0.5], [-4.0, -6.0, 0.0]]
    assert layer.folded == 1 and layer(x).tolist() == [[4.0, 0.0]]
    assert linear(x).tolist() == [[11.5, -10.0]]
    layer.fold_into(linear.weight)
    assert layer(x).tolist() == [[0.0, 0.0]] and linear(x).tolist() == [[11.5, -10.0]]


@pytest.mark.parametrize(("name", "folds"), [("reglora", True), ("keeplora", True), ("olora", False)])
def test_which_block_methods_fold_each_task_into_the_weights(name, folds):
    """RegLoRA's and KeepLoRA's scripts merge each task's LoRA before the next; O-LoRA's code keeps
    every block beside the new one."""
    assert build_method(RunConfig(method=name)).folds is folds


def unit_rows(*indices: int, width: int = 4) -> torch.Tensor:
    return torch.eye(width)[list(indices)]


def test_keeplora_weight_space_keeps_the_directions_below_the_energy_share():
    from mcit_bench.baselines.keeplora import weight_space

    gram = torch.diag(torch.tensor([9.0, 4.0, 1.0, 0.0]))  # energy shares 9/14, 4/14, 1/14, 0
    # cumulative 0.643, 0.929, 1, 1: none below 0.6, but at least one direction is kept
    assert torch.equal(weight_space(gram, 0.6).abs(), unit_rows(0))
    assert torch.equal(weight_space(gram, 0.95).abs(), unit_rows(0, 1))  # two below 0.95


def test_keeplora_new_a_is_the_gradients_top_directions_outside_the_protected_space():
    from mcit_bench.baselines.keeplora import residual_directions

    gram = torch.diag(torch.tensor([1.0, 5.0, 3.0, 0.5]))
    # e2 is protected: the residual's leading directions are e3 (3) then e1 (1)
    assert torch.equal(residual_directions(gram, unit_rows(1), 2).abs(), unit_rows(2, 0))
    assert torch.equal(residual_directions(gram, None, 2).abs(), unit_rows(1, 2))


def test_keeplora_space_grows_by_the_residual_directions_until_the_energy_share_is_explained():
    from mcit_bench.baselines.keeplora import grown_space

    gram = torch.diag(torch.tensor([4.0, 4.0, 1.5, 0.5]))  # total 10; e1 explains 0.4
    # adding e2 reaches 0.8, still below 0.85; adding e3 reaches 0.95
    assert torch.equal(grown_space(gram, unit_rows(0), 0.85, out_features=4).abs(), unit_rows(0, 1, 2))
    assert torch.equal(grown_space(gram, unit_rows(0), 0.3, out_features=4), unit_rows(0))  # already explained
    # never more directions than the gradient has singular values (min(d_in, d_out) = 2 here)
    assert torch.equal(grown_space(gram, unit_rows(0), 0.999, out_features=2).abs(), unit_rows(0, 1, 2))


def test_keeplora_update_has_no_component_in_the_protected_space():
    from mcit_bench.baselines.keeplora import grown_space, residual_directions, weight_space

    generator = torch.Generator().manual_seed(0)
    weight, gradient = torch.randn(24, 16, generator=generator), torch.randn(24, 16, generator=generator)
    space = weight_space(weight.T @ weight, 0.6)
    space = grown_space(gradient.T @ gradient, space, 0.9, out_features=24)
    down = residual_directions((2 * gradient).T @ (2 * gradient) + torch.eye(16), space, rank=4)
    update = torch.randn(24, 4, generator=generator) @ down  # whatever B learns
    assert 0 < len(space) < 16 and down.shape == (4, 16)
    assert (update @ space.T).abs().max() < 1e-6
    # the subspace's rows stay orthonormal as it grows
    torch.testing.assert_close(space @ space.T, torch.eye(len(space)), atol=1e-6, rtol=0)


def test_keeplora_completes_a_the_same_way_where_the_gradient_has_too_few_directions():
    from mcit_bench.baselines.keeplora import residual_directions

    gram = torch.diag(torch.tensor([0.0, 5.0, 0.0, 0.0]))  # one direction with energy; e1 is protected
    # e2 from the gradient, then the standard basis outside the protected space and the rows so far
    assert torch.equal(residual_directions(gram, unit_rows(0), 3), unit_rows(1, 2, 3))
    # a protected space that fills the input space leaves nothing to train: A is zero
    assert torch.equal(residual_directions(gram, unit_rows(0, 1, 2, 3), 2), torch.zeros(2, 4))


@pytest.mark.parametrize("method, summary", [
    ("seqft", "shards"),
    ("replay", "keeps past samples, shards"),
    ("joint", "upper bound, shards"),
    ("mrlora", "selects the task, grows parameters, keeps past samples, shards"),
    ("keeplora", "grows parameters, shards"),
])
def test_ls_methods_states_each_capability_in_words(method, summary):
    from mcit_bench.methods.registry import METHODS

    assert METHODS.get(method).capabilities.summary() == summary


@pytest.mark.parametrize("output, expected", [
    ("2", 1),  # a label
    (" 3 ", 2),
    ("1.", 0),  # one stray character: the first label found
    ("the expert 2", 7),  # more than one character no label has: illegal, the fallback
    ("", 7),  # nothing: the fallback
    ("12", 0),  # the first label in order that the output holds
])
def test_mrlora_reads_the_routers_answer_as_choose_ans_does(output, expected):
    from mcit_bench.baselines.mrlora import chosen_expert, expert_labels

    assert chosen_expert(output, expert_labels(3, "digits"), fallback=7) == expected


def test_mrlora_letters_follow_the_official_order():
    from mcit_bench.baselines.mrlora import chosen_expert, expert_labels

    labels = expert_labels(5, "letters")
    assert labels == ["A", "B", "C", "D", "E"]
    assert chosen_expert("C", labels, fallback=0) == 2
    assert chosen_expert("EB", labels, fallback=0) == 1  # 'B' is looked for before 'E'


def test_clmoe_counts_each_tokens_two_largest_gates_and_skips_ties():
    from mcit_bench.baselines.clmoe import expert_set, top2_counts

    gates = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2]]])  # the third token ties
    assert top2_counts(gates, 3).tolist() == [1, 2, 1]
    assert expert_set(torch.tensor([5, 0, 3, 3]), 8) == [0, 2, 3]  # never picked: not in the set
    assert expert_set(torch.tensor([5, 0, 3, 3]), 2) == [0, 2]


def test_clmoe_merge_is_the_stated_convex_combination_of_old_and_new_experts():
    from mcit_bench.adapters.experts import MoELoRA

    method = build_method(RunConfig(method="clmoe", method_options={"experts": 2, "rank": 2, "momentum": 0.7}))
    layer = MoELoRA(3, 2, experts=2, rank=2, alpha=2.0)
    method.layers = {"layer": layer}
    with torch.no_grad():
        layer.lora_A.fill_(1.0)
        layer.lora_B.fill_(2.0)
    method.before_task(Stage(2, ()), None)  # the old side: A = 1, B = 2
    with torch.no_grad():
        layer.lora_A.fill_(0.0)
        layer.lora_B.fill_(10.0)
    # expert 0 was in the last task's set and is not in this one's: it keeps 0.3 of its old weights;
    # expert 1 keeps 0.7
    method.merge(previous=[0, 1], current=[1])
    torch.testing.assert_close(layer.lora_A, torch.tensor([[0.3] * 3, [0.7] * 3]))
    torch.testing.assert_close(layer.lora_B, torch.tensor([[0.3 * 2 + 0.7 * 10, 0.7 * 2 + 0.3 * 10]] * 2))


def test_reglora_key_elements_are_the_largest_entries_of_the_update():
    from mcit_bench.baselines.reglora import key_elements

    update = torch.tensor([[0.1, -5.0, 0.2, 0.0], [3.0, 0.0, -0.3, 4.0]])
    # 25% of 8 entries: the two largest in magnitude, largest first
    assert key_elements(update, 0.25).tolist() == [[0, 1], [1, 3]]
    assert key_elements(update, 0.1).tolist() == []  # int(0.8) = 0, as the code counts


def test_reglora_penalty_is_the_weighted_mean_magnitude_of_the_new_update_at_the_key_elements():
    from mcit_bench.baselines.reglora import entries

    from mcit_bench.adapters.experts import TaskBlocksLoRA

    method = build_method(RunConfig(method="reglora", method_options={"reg_weight": 10.0}))
    layers = {name: TaskBlocksLoRA(3, 2, rank=1, alpha=1.0, dropout=0.0) for name in ("a", "b")}
    for layer in layers.values():
        for _ in range(2):
            layer.add_block(torch.Generator().manual_seed(0), torch.device("cpu"))
    with torch.no_grad():
        layers["a"].lora_B[1].copy_(torch.tensor([[1.0], [-2.0]]))
        layers["a"].lora_A[1].copy_(torch.tensor([[3.0, 0.0, 1.0]]))  # B A = [[3, 0, 1], [-6, 0, -2]]
        layers["b"].lora_B[1].zero_()  # a block that has not moved: nothing at its key elements
    method.layers, method.task = layers, 1
    method.keys = {"a": torch.tensor([[1, 0], [0, 2], [1, 0]]), "b": torch.tensor([[0, 0]])}
    assert entries(layers["a"], 1, method.keys["a"]).tolist() == [-6.0, 1.0, -6.0]
    # layer a: mean(6, 1, 6) = 13 / 3, layer b: 0; the mean over layers, times 10
    assert method.penalty().item() == pytest.approx(10 * (13 / 3) / 2)


def test_mrlora_refuses_a_stream_its_labels_cannot_name():
    from types import SimpleNamespace

    method = build_method(RunConfig(method="mrlora", method_options={"labels": "letters"}))
    stream = SimpleNamespace(tasks=[TaskDef(name=f"t{i}", type="vqa", train="x", test="y") for i in range(27)])
    with pytest.raises(ConfigError, match="letters label at most 26 experts and this stream has 27 tasks"):
        method.check_labels(RunContext(stream=stream, seed=0))


def test_disco_weights_are_the_softmax_of_cosine_similarities_at_its_temperature():
    from mcit_bench.baselines.disco import DiscoOptions, subspace_weights

    similarity = {"text": torch.tensor([[1.0, 0.0], [0.6, 0.8]]), "image": torch.tensor([[0.0, 1.0], [1.0, 0.0]])}
    # sample 2's text cosines are 0.6 and 0.8: softmax([12, 16]); the image's are the released code's unused line
    torch.testing.assert_close(subspace_weights(similarity, DiscoOptions()),
                               torch.softmax(similarity["text"] / 0.05, dim=-1))
    torch.testing.assert_close(subspace_weights(similarity, DiscoOptions(similarity="both")),
                               torch.softmax(torch.tensor([[0.5, 0.5], [0.8, 0.4]]) / 0.05, dim=-1))


def test_guided_similarities_are_cosines_to_the_normalised_prototypes():
    from mcit_bench.methods.guided import GuidedBlocksMethod

    method = GuidedBlocksMethod.__new__(GuidedBlocksMethod)
    method.prototypes = {"image": torch.tensor([[2.0, 0.0], [0.0, 3.0]]), "text": torch.tensor([[0.0, 5.0]])}
    text = torch.nn.functional.normalize(torch.tensor([[0.6, 0.8]]), dim=-1)
    image = torch.tensor([[0.6, 0.8]])

    class Guide:
        @staticmethod
        def features(samples):
            return image, text

    found = method.similarities([{}], RunContext(stream=None, seed=0, guide=Guide()))
    torch.testing.assert_close(found["image"], torch.tensor([[0.6, 0.8]]))
    torch.testing.assert_close(found["text"], torch.tensor([[0.8]]))


def test_task_blocks_weighted_forward_is_the_weighted_sum_of_each_blocks_update():
    from mcit_bench.adapters.experts import TaskBlocksLoRA

    layer = TaskBlocksLoRA(3, 2, rank=2, alpha=4.0, dropout=0.0, down_std=0.5)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        layer.add_block(generator, torch.device("cpu"))
    with torch.no_grad():
        for block in layer.lora_B:
            block.copy_(torch.randn(2, 2, generator=generator))
    x = torch.randn(2, 4, 3, generator=generator)  # two samples of four tokens
    updates = [x @ (b @ a).T * 2.0 for a, b in zip(layer.lora_A, layer.lora_B)]  # scale 4 / 2
    torch.testing.assert_close(layer(x), updates[0] + updates[1])  # no weights: O-LoRA's sum
    layer.block_weights = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    expected = torch.stack([0.25 * updates[0][0] + 0.75 * updates[1][0], updates[0][1]])
    torch.testing.assert_close(layer(x), expected)
    assert float(layer.lora_A[0].std()) == pytest.approx(0.5, rel=0.6)  # N(0, down_std^2), not Kaiming


def test_hide_weights_the_last_layer_by_the_mean_similarity_at_temperature_0_1():
    from mcit_bench.baselines.hide import expert_weights, last_layer

    similarity = {"image": torch.tensor([[0.9, 0.5]]), "text": torch.tensor([[0.7, 0.9]])}
    # means 0.8 and 0.7: softmax([8, 7])
    torch.testing.assert_close(expert_weights(similarity, 0.1), torch.softmax(torch.tensor([[8.0, 7.0]]), dim=-1))
    names = [f"model.language_model.layers.{index}.{part}" for index in (0, 1, 3, 2) for part in ("mlp.up_proj",
                                                                                                  "self_attn.q_proj")]
    assert last_layer(names) == ["model.language_model.layers.3.mlp.up_proj",
                                 "model.language_model.layers.3.self_attn.q_proj"]


def test_hide_fusion_sums_the_as_and_the_bs_apart_cross_terms_included():
    from mcit_bench.adapters.experts import TaskBlocksLoRA

    layer = TaskBlocksLoRA(3, 2, rank=2, alpha=4.0, dropout=0.0, down_std=0.5)
    generator = torch.Generator().manual_seed(1)
    for _ in range(2):
        layer.add_block(generator, torch.device("cpu"))
    with torch.no_grad():
        for block in layer.lora_B:
            block.copy_(torch.randn(2, 2, generator=generator))
    x = torch.randn(4, 3, generator=generator)
    (a0, a1), (b0, b1) = layer.lora_A, layer.lora_B
    layer.fused = True
    fused = layer(x)
    torch.testing.assert_close(fused, x @ ((b0 + b1) @ (a0 + a1)).T * 2.0)
    separate = x @ (b0 @ a0 + b1 @ a1).T * 2.0
    assert not torch.allclose(fused, separate)  # the cross terms B_0 A_1 + B_1 A_0 are there


class TokenModel(torch.nn.Module):
    """A model of the shape ``per_sample_gradients`` reads: a batch dict in, outputs with logits out; each
    sample's loss the sum over its tokens of its output times its labels."""

    def __init__(self, flatten: bool = False, norm: bool = False) -> None:
        super().__init__()
        self.first, self.second = torch.nn.Linear(3, 5), torch.nn.Linear(5, 1)
        self.norm = torch.nn.LayerNorm(5) if norm else torch.nn.Identity()
        self.flatten = flatten  # the first layer sees [samples x tokens, width], as a flattening encoder does

    def forward(self, x: torch.Tensor, labels: torch.Tensor):
        hidden = self.first(x.reshape(-1, 3) if self.flatten else x).reshape(*x.shape[:2], 5)
        return type("Outputs", (), {"logits": self.second(torch.tanh(self.norm(hidden)))})()


def token_losses(batch: dict, outputs) -> torch.Tensor:
    return (outputs.logits.squeeze(-1) * batch["labels"]).sum(1)


def test_per_sample_gradients_are_each_samples_own_and_refused_where_samples_cannot_be_told_apart():
    from mcit_bench.methods.gradients import per_sample_gradients

    generator = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(4, 6, 3, generator=generator), "labels": torch.randn(4, 6, generator=generator)}
    for flatten, norm in ((False, False), (True, False), (False, True)):
        torch.manual_seed(1)
        model = TokenModel(flatten, norm)
        params = dict(model.named_parameters())
        alone = []  # each sample's gradient from a backward of its loss alone
        for s in range(4):
            model.zero_grad()
            one = {"x": batch["x"][s:s + 1], "labels": batch["labels"][s:s + 1]}
            token_losses(one, model(**one)).sum().backward()
            alone.append({name: p.grad.clone() for name, p in params.items()})
        model.zero_grad()
        together = per_sample_gradients(model, params, batch, token_losses)
        if flatten or norm:  # the first layer's rows are not the samples / a norm has no per-sample form
            assert together is None
        else:
            losses, grads = together
            torch.testing.assert_close(losses, token_losses(batch, model(**batch)).detach())
            for name in params:
                torch.testing.assert_close(grads[name], torch.stack([g[name] for g in alone]), rtol=1e-5, atol=1e-6)
        for s in range(4):  # one sample a batch: every parameter, the norm's too, from any layout
            model.zero_grad()
            one = {"x": batch["x"][s:s + 1], "labels": batch["labels"][s:s + 1]}
            _, grads = per_sample_gradients(model, params, one, token_losses)
            for name in params:
                torch.testing.assert_close(grads[name][0], alone[s][name], rtol=1e-5, atol=1e-6)
