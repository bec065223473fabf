"""Gradients of a model's linear weights without asking the weights for them, which D-MoLE's proxy
and KeepLoRA's subspaces both read.

The gradient of a linear layer's weight is the sum over tokens of (dL/d output) x input^T, so it is
formed from the two with hooks: the same numbers, but the frozen weights never need
``requires_grad``, which a sharded weight (FSDP2, ``--shard fsdp``) could not give. A zero that
requires grad is added to each layer's output, so the loss has a gradient to follow and every output
gets its dL/d output.

Memory: every process runs the same batches, so each accumulates only its own share of each weight
gradient's rows (1/N of them over N processes, ``row_share``); what a method needs of the whole
gradient it sums over processes (a norm's square, a Gram matrix). A layer's input is held in its own
precision until its gradient arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from mcit_bench.methods.distributed import processes, row_share


def linear_weight_gradients(model: nn.Module, names: Iterable[str], batches: Iterable[dict[str, torch.Tensor]],
                            loss_of: Callable[[dict[str, torch.Tensor], object], torch.Tensor] | None = None,
                            ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """For each named ``nn.Linear``, this process's share of its weight gradient's rows (float32),
    summed over ``batches``, and its bias gradient (whole) where it has a bias; a layer the loss never
    reaches is absent. ``loss_of(batch, outputs)`` gives the loss to differentiate (default: the
    model's own loss)."""
    modules = dict(model.named_modules())
    device = next(model.parameters()).device
    probe = torch.zeros((), device=device, requires_grad=True)
    weight_grads: dict[str, torch.Tensor] = {}
    bias_grads: dict[str, torch.Tensor] = {}
    world, rank = processes()

    def capture(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1])
            rows = row_share(module.out_features, world, rank)
            output = output + probe

            def accumulate(grad: torch.Tensor) -> None:
                g = grad.reshape(-1, grad.shape[-1])
                weight_grads[name] = weight_grads.get(name, 0) + g[:, rows].float().T @ x.float()
                if module.bias is not None:
                    bias_grads[name] = bias_grads.get(name, 0) + g.float().sum(0)

            output.register_hook(accumulate)
            return output
        return hook

    handles = [modules[name].register_forward_hook(capture(name)) for name in names]
    try:
        for batch in batches:
            outputs = model(**batch)
            (outputs.loss if loss_of is None else loss_of(batch, outputs)).backward()
    finally:
        for handle in handles:
            handle.remove()
    return weight_grads, bias_grads
