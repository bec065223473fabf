"""Adapter layers, forward plus backward, at a 7B-like layer shape scaled to this CPU.

A LLaVA-7B attention projection is 4096 x 4096 over batches of a few thousand tokens; here one
layer of d_in = d_out = 1024 over 4 sequences of 256 tokens (a quarter of the width, a quarter of
the tokens), with CoIN's expert layout scaled the same way: 8 experts splitting rank 32 (MoELoRA),
8 branches of MoELoRA's per-expert rank 4 behind one trunk of rank 4, top-2 routing (BranchLoRA). The base
weight is frozen
and included, as in a real layer. Prints milliseconds per batch and the ratios:

- MoELoRA / peft LoRA of the same total rank (the cost of the mixture);
- BranchLoRA / MoELoRA (the paper: 51 / 62 ms = 0.82 on a GPU), and BranchLoRA / MoELoRA computed
  expert by expert (the form of public MoELoRA code);
- naive per-expert loop / batched MoELoRA (aim >= 2x).

    python benchmarks/adapter_layers.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from mcit_bench.adapters.experts import BranchLoRA, MoELoRA, Routing, attach_adapters

D, TOKENS, BATCH, EXPERTS, RANK = 1024, 256, 4, 8, 32


class NaiveMoELoRA(nn.Module):
    """The same MoELoRA computed expert by expert, as a straightforward implementation would."""

    def __init__(self, layer: MoELoRA) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = torch.softmax(x @ self.layer.router.T, dim=-1)
        r = self.layer.expert_rank
        out = 0
        for e in range(self.layer.experts):
            a = self.layer.lora_A[e * r:(e + 1) * r]
            b = self.layer.lora_B[:, e * r:(e + 1) * r]
            out = out + gates[..., e:e + 1] * ((x @ a.T) @ b.T)
        return out * self.layer.scale


def with_base(adapter_factory) -> nn.Module:
    model = nn.Sequential(nn.Linear(D, D))
    model[0].weight.requires_grad_(False)
    model[0].bias.requires_grad_(False)
    attach_adapters(model, ["0"], lambda name, linear: adapter_factory())
    return model


def peft_lora() -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    model = nn.Sequential(nn.Linear(D, D))
    model = inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=["0"]), model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)
    return model


def nonzero(model: nn.Module) -> nn.Module:
    """Give zero-initialised up-projections values, so no kernel can skip work."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad and not parameter.any():
                parameter.normal_(0, 0.01)
    return model


def step_ms(model: nn.Module, x: torch.Tensor) -> float:
    """One forward + backward pass, in milliseconds."""
    started = time.perf_counter()
    model(x).square().mean().backward()
    elapsed = time.perf_counter() - started
    model.zero_grad(set_to_none=True)
    return 1000 * elapsed


def side_by_side(models: dict[str, nn.Module], x: torch.Tensor, rounds: int, per_round: int = 3) -> dict[str, float]:
    """Median ms per model, timed in alternating rounds so that drift of the machine hits all alike."""
    for model in models.values():
        model.train()
        for _ in range(3):  # warm-up
            step_ms(model, x)
    timings: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            timings[name] += [step_ms(model, x) for _ in range(per_round)]
    return {name: statistics.median(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds of 3 passes per layer")
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(BATCH, TOKENS, D)
    routing = Routing()
    routing.training_task = 0

    def branch() -> BranchLoRA:
        # the paper's comparison: each branch has MoELoRA's per-expert rank, behind one shared trunk
        layer = BranchLoRA(D, D, EXPERTS, RANK // EXPERTS, 2.0 * RANK // EXPERTS, 2, routing)
        layer.add_router(torch.Generator().manual_seed(0))
        return layer

    def moelora() -> MoELoRA:
        return MoELoRA(D, D, EXPERTS, RANK, 2.0 * RANK)

    moe_model = nonzero(with_base(moelora))
    # the same weights computed expert by expert, on a base layer of its own
    naive_model = nn.Sequential(nn.Linear(D, D))
    naive_model[0].load_state_dict({"weight": moe_model[0].weight, "bias": moe_model[0].bias})
    naive_model[0].requires_grad_(False)
    naive = NaiveMoELoRA(moe_model[0].adapter)
    naive_model[0].register_forward_hook(lambda m, i, o: o + naive(i[0]))
    models = {
        "peft LoRA": nonzero(peft_lora()),
        "MoELoRA": moe_model,
        "BranchLoRA": nonzero(with_base(branch)),
        "MoELoRA, per-expert loop": naive_model,
        # the adapters alone: what the mixture itself costs, without the frozen base matmul both share
        "MoELoRA adapter only": nonzero(moelora()),
        "BranchLoRA adapter only": nonzero(branch()),
    }
    ms = side_by_side(models, x, args.rounds)
    print(f"shape: {BATCH} x {TOKENS} tokens, d_in = d_out = {D}, {EXPERTS} experts/branches, total rank {RANK}; "
          f"forward + backward, median of {3 * args.rounds} passes in {args.rounds} alternating rounds, "
          f"{torch.get_num_threads()} threads")
    for name, value in ms.items():
        print(f"  {name:28s} {value:8.2f} ms")
    print(f"MoELoRA / peft LoRA:          {ms['MoELoRA'] / ms['peft LoRA']:.2f}")
    print(f"BranchLoRA / MoELoRA:         {ms['BranchLoRA'] / ms['MoELoRA']:.2f}  (paper 51/62 = 0.82)")
    print(f"  adapters alone:             {ms['BranchLoRA adapter only'] / ms['MoELoRA adapter only']:.2f}")
    # public MoELoRA code computes its experts one by one; against that form BranchLoRA's trunk saves most
    print(f"BranchLoRA / per-expert loop: {ms['BranchLoRA'] / ms['MoELoRA, per-expert loop']:.2f}")
    print(f"per-expert loop / batched:    {ms['MoELoRA, per-expert loop'] / ms['MoELoRA']:.2f}x")


if __name__ == "__main__":
    main()
