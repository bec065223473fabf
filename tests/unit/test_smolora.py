"""SMoLoRA's separable layer against the official forward written out as the official code loops it
(Minato-Zackie/SMoLoRA, PEFT_SMoLoRA/peft/tuners/smolora.py lines 405-474), with exact parameter counts,
routers that no gradient reaches, and routing that neither padding nor a batch's other samples move."""

import pytest
import torch

from mcit_bench.adapters.separable import SeparableLoRA, SeparableRouting
from mcit_bench.core.errors import ConfigError

D_IN, D_OUT, EXPERTS, RANK, WIDTH = 8, 6, 4, 8, 5


def layer_and_routing(seed: int = 0) -> tuple[SeparableLoRA, SeparableRouting]:
    torch.manual_seed(seed)
    routing = SeparableRouting()
    layer = SeparableLoRA(D_IN, D_OUT, EXPERTS, RANK, alpha=16.0, dropout=0.0, instruction_width=WIDTH,
                          routing=routing)
    with torch.no_grad():  # trained-looking experts (B starts at zero)
        layer.lora_B.normal_()
    return layer, routing


def official_forward(layer: SeparableLoRA, x: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
    """The official forward for one unpadded sample ([1, tokens, d_in]), expert by expert."""
    r_e, half = RANK // EXPERTS, EXPERTS // 2
    x_emb = x.mean(dim=1, keepdim=True)
    vu_router = x_emb @ layer.vu_gate.T
    top1_vu = torch.zeros_like(vu_router).scatter_(-1, vu_router.argmax(-1, keepdim=True), 1.0)
    if_router = instruction @ layer.ins_gate.T
    top1_if = torch.zeros_like(if_router).scatter_(-1, if_router.argmax(-1, keepdim=True), 1.0)
    final = torch.cat((top1_vu, top1_if.unsqueeze(1)), dim=-1)
    scale = 16.0 / RANK
    vu_result, if_result = 0.0, 0.0
    for i in range(EXPERTS):
        a, b = layer.lora_A[i * r_e:(i + 1) * r_e], layer.lora_B[:, i * r_e:(i + 1) * r_e]
        term = (x @ a.T) @ b.T * scale * final[:, :, i].unsqueeze(-1)
        if i < half:
            vu_result = vu_result + term
        else:
            if_result = if_result + term
    scores = torch.cat([vu_result @ layer.lora_fc_A.T, if_result @ layer.lora_fc_B.T], dim=-1)
    weights = torch.softmax(scores, dim=-1)
    return weights[:, :, :1] * vu_result + weights[:, :, 1:] * if_result


def test_the_layer_is_the_official_forward_sample_by_sample_whatever_the_padding():
    layer, routing = layer_and_routing()
    samples = [torch.randn(1, 5, D_IN), torch.randn(1, 3, D_IN), torch.randn(1, 4, D_IN)]
    instructions = torch.randn(3, WIDTH)
    # one right-padded batch: the padding's positions hold garbage the mean must not read
    batch = torch.randn(3, 5, D_IN) * 50
    mask = torch.zeros(3, 5, dtype=torch.bool)
    for row, sample in enumerate(samples):
        batch[row, :sample.shape[1]] = sample[0]
        mask[row, :sample.shape[1]] = True
    routing.set(mask, instructions)
    out = layer(batch)
    for row, sample in enumerate(samples):
        expected = official_forward(layer, sample, instructions[row:row + 1])
        torch.testing.assert_close(out[row:row + 1, :sample.shape[1]], expected)


def test_a_sample_uses_one_vu_and_one_if_expert_only():
    layer, routing = layer_and_routing(1)
    x = torch.randn(1, 6, D_IN)
    routing.set(torch.ones(1, 6, dtype=torch.bool), torch.randn(1, WIDTH))
    vu, if_ = layer.choices(x)
    before = layer(x).detach()
    chosen = torch.zeros(EXPERTS, dtype=torch.bool)
    chosen[int(vu)] = chosen[EXPERTS // 2 + int(if_)] = True
    with torch.no_grad():  # every other expert silenced: the output does not move
        layer.lora_B[:, ~chosen.repeat_interleave(RANK // EXPERTS)] = 0.0
    torch.testing.assert_close(layer(x), before)
    with torch.no_grad():  # and the chosen ones carry it
        layer.lora_B.zero_()
    assert torch.count_nonzero(layer(x)) == 0


def test_a_decoding_step_keeps_the_prompt_s_vu_expert():
    layer, routing = layer_and_routing(2)
    prompt, instruction = torch.randn(2, 7, D_IN), torch.randn(2, WIDTH)
    routing.set(torch.ones(2, 7, dtype=torch.bool), instruction)
    layer(prompt)
    chosen = layer.vu_choice.clone()
    step = torch.randn(2, 1, D_IN) * 100  # a new token whose own mean would route elsewhere
    layer(step)
    assert torch.equal(layer.vu_choice, chosen)


def test_parameters_counted_by_hand_and_no_gradient_reaches_the_routers():
    layer, routing = layer_and_routing(3)
    trainable = sum(p.numel() for p in layer.parameters())
    assert trainable == RANK * D_IN + D_OUT * RANK + 2 * D_OUT  # A, B and the two scores: 64 + 48 + 12
    assert {name for name, _ in layer.named_buffers()} == {"vu_gate", "ins_gate"}
    routing.set(torch.ones(2, 3, dtype=torch.bool), torch.randn(2, WIDTH))
    layer(torch.randn(2, 3, D_IN)).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize("experts,rank", [(3, 6), (4, 6), (0, 8)])
def test_an_odd_split_is_refused_in_one_sentence(experts, rank):
    with pytest.raises(ConfigError, match="even number of experts"):
        SeparableLoRA(D_IN, D_OUT, experts, rank, 16.0, 0.0, WIDTH, SeparableRouting())


def test_a_layer_without_its_batch_s_routing_says_so():
    layer, routing = layer_and_routing()
    with pytest.raises(RuntimeError, match="without its batch's routing"):
        layer(torch.randn(2, 3, D_IN))
