"""The LoRA-variant layers against their formulas computed naively, expert by expert."""

import pytest
import torch
from torch import nn

from mcit_bench.adapters.experts import BranchLoRA, MoELoRA, Routing, TaskExperts, attach_adapters, top_k_gates
from mcit_bench.core.errors import ConfigError


def randomise(layer: nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for parameter in layer.parameters():
        parameter.data = torch.randn(parameter.shape, generator=generator)


def test_moelora_is_the_softmax_weighted_sum_of_its_experts():
    layer = MoELoRA(d_in=6, d_out=5, experts=3, rank=6, alpha=12.0)
    randomise(layer)
    x = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(1))
    gates = torch.softmax(x @ layer.router.T, -1)
    naive = sum(gates[..., e : e + 1] * (x @ layer.lora_A[2 * e : 2 * e + 2].T @ layer.lora_B[:, 2 * e : 2 * e + 2].T)
                for e in range(3))
    torch.testing.assert_close(layer(x), naive * 2.0)


def test_moelora_starts_as_the_base_model_and_refuses_an_uneven_rank():
    assert MoELoRA(6, 5, 3, 6, 12.0)(torch.randn(1, 2, 6)).abs().max() == 0  # B = 0
    with pytest.raises(ConfigError, match="multiple of the number of experts"):
        MoELoRA(6, 5, 4, 6, 12.0)


def test_top_k_gates_keep_k_renormalised():
    gates = top_k_gates(torch.log(torch.tensor([[0.1, 0.5, 0.3, 0.1]])), 2)
    torch.testing.assert_close(gates, torch.tensor([[0.0, 0.625, 0.375, 0.0]]))


def test_branchlora_routes_each_sample_with_its_own_task_router():
    routing = Routing()
    layer = BranchLoRA(d_in=6, d_out=5, branches=4, rank=2, alpha=4.0, top_k=2, routing=routing)
    generator = torch.Generator().manual_seed(0)
    layer.add_router(generator)
    layer.add_branch()  # a branch only the second router can use
    layer.add_router(generator)
    randomise(layer, 3)
    layer.eval()
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(4))
    routing.task_ids = torch.tensor([1, 0])
    out = layer(x)
    for sample, task in ((0, 1), (1, 0)):
        router = layer.routers[task]
        logits = x[sample] @ router.T
        gates = top_k_gates(logits, 2)
        naive = sum(gates[:, e : e + 1] * (x[sample] @ layer.lora_A.T @ layer.branches[e].T)
                    for e in range(router.shape[0]))
        torch.testing.assert_close(out[sample], naive * 2.0)
    assert layer.routers[0].shape[0] == 4 and layer.routers[1].shape[0] == 5
    # training routes the whole batch by one router (no per-sample gather): same output
    for task in (0, 1):
        routing.task_ids = torch.tensor([task, task])
        per_sample = layer(x)
        routing.task_ids, routing.training_task = None, task
        torch.testing.assert_close(layer(x), per_sample)
    routing.task_ids = torch.tensor([0, 1, 0])
    with pytest.raises(RuntimeError, match="routing holds 3 task ids but an adapter layer sees a first axis of 2"):
        layer(x)


def test_branchlora_usage_counts_the_gate_mass_of_real_tokens_only():
    routing = Routing()
    layer = BranchLoRA(d_in=6, d_out=5, branches=4, rank=2, alpha=4.0, top_k=2, routing=routing)
    layer.add_router(torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(4))
    gates = top_k_gates(x @ layer.routers[0].T, 2)
    routing.token_mask = torch.tensor([[True, True, False], [True, False, False]])  # 3 padding tokens
    layer.train()
    layer(x)
    torch.testing.assert_close(layer.usage, gates[0, :2].sum(0) + gates[1, 0])
    routing.token_mask = torch.ones(2, 4, dtype=torch.bool)
    routing.micro_batch += 1  # the next micro-batch (BranchLoRA's before_step): its usage counts
    with pytest.raises(RuntimeError, match=r"the token mask is \(2, 4\) but a BranchLoRA layer sees \(2, 3\)"):
        layer(x)


def test_lora_down_projections_start_as_their_sources_start_them():
    # peft's Kaiming-uniform, bound 1 / sqrt(d_in): at d_in 128, about 0.088, so std 0.051
    torch.manual_seed(0)
    a = BranchLoRA(128, 64, 4, 4, 8.0, 2, Routing()).lora_A
    assert float(a.abs().max()) <= 1 / 128 ** 0.5
    assert float(a.std()) == pytest.approx(1 / (3 * 128) ** 0.5, rel=0.1)
    # CoIN's MoELoRA: N(0, 0.01^2) (coinmoelora.py, lines 292-294)
    assert float(MoELoRA(128, 64, 4, 16, 32.0).lora_A.std()) == pytest.approx(0.01, rel=0.1)


def test_task_experts_sum_only_the_experts_of_the_sample_task():
    routing = Routing()
    layer = TaskExperts(d_in=6, d_out=5, rank=2, alpha=2.0, routing=routing)
    generator = torch.Generator().manual_seed(0)
    for task in (0, 2, 2):
        layer.add_expert(task, generator, torch.device("cpu"))
    randomise(layer, 5)
    x = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(6))
    routing.task_ids = torch.tensor([2, 0, -1])
    out = layer(x)

    def expert(e, xs):
        return xs @ layer.lora_A[e].T @ layer.lora_B[e].T

    torch.testing.assert_close(out[0], expert(1, x[0]) + expert(2, x[0]))
    torch.testing.assert_close(out[1], expert(0, x[1]))
    assert out[2].abs().max() == 0  # routed to no task: the base model


def test_task_experts_in_training_add_the_past_task_the_router_picked():
    routing = Routing()
    layer = TaskExperts(d_in=6, d_out=5, rank=2, alpha=2.0, routing=routing)
    generator = torch.Generator().manual_seed(0)
    for task in (0, 1, 2):
        layer.add_expert(task, generator, torch.device("cpu"))
    randomise(layer, 7)
    x = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(8))
    routing.training_task, routing.past_ids = 2, torch.tensor([0, -1, 1])  # D-MoLE's training-time routing
    out = layer(x)

    def expert(e, xs):
        return xs @ layer.lora_A[e].T @ layer.lora_B[e].T

    torch.testing.assert_close(out[0], expert(2, x[0]) + expert(0, x[0]))
    torch.testing.assert_close(out[1], expert(2, x[1]))  # no past task passed its threshold
    torch.testing.assert_close(out[2], expert(2, x[2]) + expert(1, x[2]))


def test_attach_adapters_keeps_names_and_adds_the_output():
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
    before = model(torch.ones(1, 4))
    adapters = attach_adapters(model, ["0"], lambda name, linear: MoELoRA(4, 3, 2, 2, 2.0))
    assert "0.weight" in dict(model.named_parameters()) and "0.adapter.lora_A" in dict(model.named_parameters())
    torch.testing.assert_close(model(torch.ones(1, 4)), before)  # B = 0
    nn.init.ones_(adapters["0"].lora_B)
    assert not torch.equal(model(torch.ones(1, 4)), before)
    with pytest.raises(ConfigError, match="not a linear layer"):
        attach_adapters(model, ["1"], lambda name, linear: MoELoRA(4, 3, 2, 2, 2.0))


def test_task_experts_route_the_rows_of_a_flattened_vision_encoder_by_their_sample():
    # Qwen2-VL's vision blocks see the patches of all images in one axis: 3 rows of sample 0, 2 of sample 1
    routing = Routing()
    layer = TaskExperts(d_in=6, d_out=5, rank=2, alpha=2.0, routing=routing)
    generator = torch.Generator().manual_seed(0)
    for task in (0, 1):
        layer.add_expert(task, generator, torch.device("cpu"))
    randomise(layer, 3)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(4))
    routing.task_ids = torch.tensor([1, 0])
    routing.row_samples = {5: torch.tensor([0, 0, 0, 1, 1])}
    out = layer(x)
    expected = [1, 1, 1, 0, 0]
    for row, task in enumerate(expected):
        torch.testing.assert_close(out[row], x[row] @ layer.lora_A[task].T @ layer.lora_B[task].T)
    with pytest.raises(RuntimeError, match="first axis of 4"):
        layer(x[:4])  # a row count the routing knows nothing of
