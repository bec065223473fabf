"""SAME's stabilised experts (LAMDA-CL/Prism PEFT/tuners/custom/same.py) pinned with numbers: the forward
against the original's expert-by-expert loop (training and evaluation routing), the three stabilisers'
formulas on hand-made bases, frozen experts that get no gradient, statistics taken once per micro-batch,
and the exact parameter count on mcit-tiny."""

import math

import pytest
import torch

from mcit_bench.adapters.stabilised import (
    SameState,
    StabilisedExperts,
    Stabilisers,
    curvature_gradient,
    energy_rank,
    freezing_masks,
    masked_routing,
    randomized_basis,
    router_gradient,
    top_two,
    window_smoothed,
)

D_IN, D_OUT, EXPERTS, RANK_E = 6, 5, 3, 2


def layer_and_state(seed: int = 0, **knobs) -> tuple[StabilisedExperts, SameState]:
    torch.manual_seed(seed)
    state = SameState()
    layer = StabilisedExperts(D_IN, D_OUT, EXPERTS, RANK_E, scale=2.0, state=state, knobs=Stabilisers(**knobs))
    with torch.no_grad():  # trained-looking experts (B starts at zero)
        layer.lora_B.normal_()
        layer.lora_A.normal_()
    return layer, state


def original_mixture(layer: StabilisedExperts, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """SAMELinearA then SAMELinearB (same.py lines 836-864): each a sum over experts of its output times
    the expert's routing weight, for one sample's routing ``weights`` [experts]."""
    a_out = 0.0
    for e in range(EXPERTS):
        a_out = a_out + x @ layer.lora_A[e * RANK_E:(e + 1) * RANK_E].T * weights[e]
    b_out = 0.0
    for e in range(EXPERTS):
        b_out = b_out + a_out @ layer.lora_B[:, e * RANK_E:(e + 1) * RANK_E].T * weights[e]
    return b_out * 2.0


def padded(samples: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded as for generation, the padding full of garbage the routing must not read."""
    width = max(s.shape[0] for s in samples)
    batch = torch.randn(len(samples), width, D_IN) * 50
    mask = torch.zeros(len(samples), width, dtype=torch.bool)
    for row, sample in enumerate(samples):
        batch[row, width - sample.shape[0]:] = sample
        mask[row, width - sample.shape[0]:] = True
    return batch, mask


def test_evaluation_routes_each_sample_as_the_original_routes_it_alone():
    layer, state = layer_and_state()
    layer.eval()
    samples = [torch.randn(4, D_IN), torch.randn(2, D_IN), torch.randn(3, D_IN)]
    batch, state.token_mask = padded(samples)
    out = layer(batch)
    for row, sample in enumerate(samples):
        # same.py lines 351-358: logits / expert_num, softmax, mean over tokens, top-2 of E renormalised
        gates = torch.softmax(sample @ layer.router.T / EXPERTS, dim=-1).mean(dim=0)
        probs = gates / (gates.sum() + 1e-8)
        values, indices = probs.topk(2)
        weights = torch.zeros(EXPERTS).index_put((indices,), values)
        weights = weights / (weights.sum() + 1e-8)
        assert int((weights > 0).sum()) == 2
        expected = original_mixture(layer, sample, weights)
        torch.testing.assert_close(out[row, -sample.shape[0]:], expected, rtol=1e-5, atol=1e-5)
    # a decoding step routes by its own token
    step = torch.randn(3, 1, D_IN)
    out = layer(step)
    for row in range(3):
        gates = torch.softmax(step[row] @ layer.router.T / EXPERTS, dim=-1)[0]
        torch.testing.assert_close(out[row], original_mixture(layer, step[row], top_two(gates)), rtol=1e-5, atol=1e-5)


def test_training_routes_the_whole_micro_batch_by_one_masked_mean():
    layer, state = layer_and_state()
    layer.train()
    samples = [torch.randn(4, D_IN), torch.randn(2, D_IN)]
    batch, state.token_mask = padded(samples)
    state.step, state.task = 1, 0
    with torch.no_grad():
        layer.masks.copy_(torch.tensor([1.0, 0.0, 1.0]))  # expert 1 frozen out
    tokens = torch.cat(samples)
    gates = torch.softmax(tokens @ layer.router.T, dim=-1).mean(dim=0)  # lines 343-346: no temperature
    kept = gates * torch.tensor([1.0, 0.0, 1.0])
    weights = kept / kept.sum()
    out = layer(batch)
    for row, sample in enumerate(samples):
        torch.testing.assert_close(out[row, -sample.shape[0]:], original_mixture(layer, sample, weights),
                                   rtol=1e-5, atol=1e-5)


def test_a_frozen_expert_receives_no_gradient_and_the_others_do():
    layer, state = layer_and_state()
    layer.train()
    batch, state.token_mask = padded([torch.randn(4, D_IN), torch.randn(3, D_IN)])
    state.step, state.task = 1, 2
    with torch.no_grad():
        layer.masks.copy_(torch.tensor([1.0, 0.0, 1.0]))
    layer(batch).pow(2).sum().backward()
    frozen = slice(RANK_E, 2 * RANK_E)
    assert torch.count_nonzero(layer.lora_A.grad[frozen]) == 0
    assert torch.count_nonzero(layer.lora_B.grad[:, frozen]) == 0
    assert torch.count_nonzero(layer.lora_A.grad[:RANK_E]) > 0
    assert torch.count_nonzero(layer.lora_B.grad[:, -RANK_E:]) > 0


def test_when_every_expert_is_masked_the_current_tasks_takes_it_all():
    torch.testing.assert_close(masked_routing(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([1.0, 0.0, 1.0]), 0),
                               torch.tensor([0.5 / 0.7, 0.0, 0.2 / 0.7]))
    torch.testing.assert_close(masked_routing(torch.tensor([0.5, 0.3, 0.2]), torch.zeros(3), 1),
                               torch.tensor([0.0, 1.0, 0.0]))


def test_freezing_masks_by_normalised_utilisation_minus_importance():
    # utilisation [1, 1/3, 0] and importance [0, 1/3, 1] after min-max: scores [1, 0, -1]; tau 0.1
    masks, all_out = freezing_masks(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.3, 0.5]), current=0, tau=0.1)
    assert masks.tolist() == [1.0, 0.0, 0.0] and all_out
    # the current task's expert is never masked, and one expert above tau keeps the masks moving
    masks, all_out = freezing_masks(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.3, 0.5]), current=2, tau=0.1)
    assert masks.tolist() == [1.0, 0.0, 1.0] and not all_out
    # constant statistics normalise to zeros: every score 0 < 0.1
    masks, all_out = freezing_masks(torch.full((3,), 1 / 3), torch.full((3,), 1 / 3), current=1, tau=0.1)
    assert masks.tolist() == [0.0, 1.0, 0.0] and all_out


def test_energy_rank_and_the_smoothing_window_by_hand():
    # energies 9, 4, 1 of 14: cumulative shares 0.643, 0.929, 1; two are needed to pass 0.9
    assert energy_rank(torch.tensor([3.0, 2.0, 1.0]), 0.9) == 2
    assert energy_rank(torch.tensor([3.0, 2.0, 1.0]), 0.5) == 1
    assert energy_rank(torch.tensor([3.0, 2.0, 1.0]), 1.0) == 3
    torch.testing.assert_close(window_smoothed(torch.tensor([1.0, 2.0, 3.0, 4.0]), 3),
                               torch.tensor([1.0, 1.5, 2.0, 3.0]))


def test_the_router_gradient_is_scaled_within_the_leading_directions_by_hand():
    basis = torch.eye(3)
    spreads = torch.tensor([3.0, 2.0, 1.0])
    # k = 2; smoothed spreads [3, 2.5]; 1 / S normalised by its largest: [2.5 / 3, 1], inside [0.8, 1.2]
    grad = torch.tensor([[1.0, 1.0, 1.0], [2.0, -1.0, 4.0]])
    scaled = router_gradient(grad, basis, spreads, 0.9, 3)
    factor = (1 / (3 + 1e-6)) / (1 / (2.5 + 1e-6))
    torch.testing.assert_close(scaled, torch.tensor([[factor, 1.0, 1.0], [2 * factor, -1.0, 4.0]]))
    # a spread ten times another: the scaling is clamped at 0.8
    scaled = router_gradient(torch.ones(1, 2), torch.eye(2), torch.tensor([10.0, 1.0]), 1.0, 1)
    torch.testing.assert_close(scaled, torch.tensor([[0.8, 1.0]]))


def test_the_curvature_gradient_by_hand_in_a_rotated_basis():
    angle = 0.3
    basis = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0],
                          [0.0, 0.0, 1.0]])
    spreads = torch.tensor([3.0, 2.0, 1.0])  # k = 2 at 0.9
    grad = torch.tensor([[1.0, 2.0, 3.0]])
    along = grad @ basis  # coordinates in the basis
    expected = along[:, 0:1] / 3.9 * basis[:, 0] + along[:, 1:2] / 2.9 * basis[:, 1] + along[:, 2:3] / 0.9 * basis[:, 2]
    torch.testing.assert_close(curvature_gradient(grad, basis, spreads, 0.9, 0.9), expected)


def test_the_randomized_basis_is_orthonormal_and_keeps_the_whole_variance_at_full_width():
    torch.manual_seed(1)
    rows = torch.randn(200, 5) @ torch.diag(torch.tensor([5.0, 3.0, 1.0, 0.5, 0.1])) + 7.0
    basis, spreads = randomized_basis(rows, 64)
    assert basis.shape == (5, 5)
    torch.testing.assert_close(basis.T @ basis, torch.eye(5), atol=1e-5, rtol=0)
    variance = torch.var(rows, dim=0).sum()  # the trace of the covariance: any orthonormal basis holds it all
    torch.testing.assert_close(spreads.pow(2).sum(), variance, rtol=1e-4, atol=0)
    basis, spreads = randomized_basis(rows, 2)
    assert basis.shape == (5, 2) and spreads.shape == (2,)


def test_the_hooks_apply_the_formulas_to_the_true_gradients():
    def gradients(step: int, task: int, valid: bool) -> tuple[torch.Tensor, torch.Tensor, StabilisedExperts]:
        layer, state = layer_and_state(seed=3, max_components=4)
        layer.train()
        with torch.no_grad():
            layer.basis.copy_(torch.linalg.qr(torch.randn(D_IN, 4))[0])
            layer.spreads.copy_(torch.tensor([2.0, 1.5, 1.0, 0.2]))
            layer.prev_basis.copy_(torch.linalg.qr(torch.randn(D_IN, 4))[0])
            layer.prev_spreads.copy_(torch.tensor([1.0, 0.7, 0.3, 0.1]))
        layer.prev_valid, state.step, state.task = valid, step, task
        layer.counted_step = step  # the statistics are not under test here
        torch.manual_seed(5)
        batch = torch.randn(2, 4, D_IN)
        state.token_mask = torch.ones(2, 4, dtype=torch.bool)
        layer(batch).pow(2).sum().backward()
        return layer.router.grad, layer.lora_A.grad, layer

    raw_router, raw_a, _ = gradients(step=9, task=0, valid=True)  # before the 10th micro-batch, task 0: untouched
    router, a, layer = gradients(step=10, task=1, valid=True)
    torch.testing.assert_close(router, router_gradient(raw_router, layer.basis, layer.spreads, 0.9, 3))
    torch.testing.assert_close(a, curvature_gradient(raw_a, layer.prev_basis, layer.prev_spreads, 0.9, 0.9))
    assert not torch.allclose(router, raw_router) and not torch.allclose(a, raw_a)
    _, a, _ = gradients(step=10, task=1, valid=False)  # no previous basis: A's gradient untouched
    torch.testing.assert_close(a, raw_a)


def test_statistics_are_taken_once_per_micro_batch_and_the_basis_every_twentieth():
    layer, state = layer_and_state(max_components=3)
    layer.train()
    batch = torch.randn(2, 4, D_IN)
    state.token_mask = torch.ones(2, 4, dtype=torch.bool)
    state.step = 1
    layer(batch)
    utilisation, basis = layer.utilisation.clone(), layer.basis.clone()
    gates = torch.softmax(batch.reshape(-1, D_IN) @ layer.router.T, dim=-1).detach()
    torch.testing.assert_close(utilisation, 0.95 / EXPERTS + 0.05 * gates.mean(0))
    energy = batch.reshape(-1, D_IN).pow(2).sum(1, keepdim=True)
    torch.testing.assert_close(layer.importance, 0.95 / EXPERTS + 0.05 * (gates * energy).mean(0))
    layer(batch)  # recomputation of the same micro-batch: nothing counted again
    torch.testing.assert_close(layer.utilisation, utilisation)
    for step in range(2, 21):  # micro-batches 2 to 20 keep the first basis; the 21st takes a new one
        state.step = step
        layer(torch.randn(2, 4, D_IN))
        torch.testing.assert_close(layer.basis, basis)
    state.step = 21
    layer(torch.randn(2, 4, D_IN))
    assert not torch.allclose(layer.basis, basis)


def test_the_snapshot_keeps_the_first_columns_up_to_the_count_of_nonzero_spreads():
    layer, _ = layer_and_state(max_components=3)
    with torch.no_grad():
        layer.basis.copy_(torch.arange(18.0).view(6, 3))
        layer.spreads.copy_(torch.tensor([2.0, 0.0, 1.0]))  # two above 1e-10: the first two columns (line 728)
    layer.snapshot()
    assert layer.prev_valid
    torch.testing.assert_close(layer.prev_basis[:, :2], layer.basis[:, :2])
    assert torch.count_nonzero(layer.prev_basis[:, 2]) == 0
    assert layer.prev_spreads.tolist() == [2.0, 0.0, 0.0]
    layer.spreads.zero_()
    layer.snapshot()
    assert not layer.prev_valid


def test_a_token_mask_of_another_batch_is_refused():
    layer, state = layer_and_state()
    state.token_mask = torch.ones(3, 5, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="token mask"):
        layer(torch.randn(2, 4, D_IN))


def test_the_method_adapts_only_the_feed_forward_layers_with_the_exact_parameter_count():
    from mcit_bench.config import RunConfig
    from mcit_bench.data.stream import load_stream
    from mcit_bench.methods.base import RunContext
    from mcit_bench.methods.registry import build_method
    from mcit_bench.models.loading import load_model

    model, _ = load_model("mcit-tiny")
    stream = load_stream("synth-coin")
    method = build_method(RunConfig(method="same"))
    method.setup(model, RunContext(stream=stream, seed=0))
    names = sorted(method.layers)
    assert len(names) == 12 and {name.rsplit(".", 1)[-1] for name in names} == {"gate_proj", "up_proj", "down_proj"}
    # mcit-tiny: 4 layers of gate and up (128 -> 384) and down (384 -> 128); 8 experts of rank 8, a router each
    experts, r = len(stream.tasks), 8
    shapes = [(128, 384), (128, 384), (384, 128)]
    per_layer = sum(experts * r * (d_in + d_out) + experts * d_in for d_in, d_out in shapes)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert experts == 8 and per_layer == 103424 and trainable == 4 * per_layer == 413696


def test_the_task_mixture_is_the_softmax_of_28_times_the_weighted_cosines_padded_to_every_expert():
    from mcit_bench.methods.base import RunContext
    from mcit_bench.methods.registry import METHODS

    method = METHODS.get("same")(METHODS.get("same").Options())
    method.experts = 3
    method.prototypes = {"image": torch.tensor([[2.0, 0.0], [0.0, 3.0]]),
                         "text": torch.tensor([[0.0, 5.0], [4.0, 0.0]])}

    class Guide:  # one sample: unit-length image (0.6, 0.8) and instruction (0.8, 0.6) features
        @staticmethod
        def features(samples):
            return torch.tensor([[0.6, 0.8]]), torch.tensor([[0.8, 0.6]])

    mixture = method.task_mixture([{}], RunContext(stream=None, seed=0, guide=Guide()))
    # image cosines 0.6 and 0.8, text cosines 0.6 and 0.8 to the normalised prototypes
    scores = torch.tensor([0.2 * 0.6 + 0.8 * 0.6, 0.2 * 0.8 + 0.8 * 0.8])
    expected = torch.softmax(28 * scores, dim=0)
    torch.testing.assert_close(mixture, torch.tensor([[expected[0], expected[1], 0.0]]))


def test_at_evaluation_the_prior_weighs_the_experts_before_the_top_two():
    layer, state = layer_and_state()
    layer.eval()
    sample = torch.randn(3, D_IN)
    state.token_mask = torch.ones(1, 3, dtype=torch.bool)
    gates = torch.softmax(sample @ layer.router.T / EXPERTS, dim=-1).mean(dim=0)
    prior = torch.tensor([0.0, 0.3, 0.7])  # expert 0's gate is ignored whatever it is
    state.prior = prior[None]
    kept = gates * prior
    kept = kept / kept.sum()
    out = layer(sample[None])
    torch.testing.assert_close(out[0], original_mixture(layer, sample, kept), rtol=1e-5, atol=1e-5)
