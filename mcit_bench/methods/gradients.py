"""Gradients of a model's linear weights without asking the weights for them, which D-MoLE's proxy
and KeepLoRA's subspaces both read, and each sample's own gradient from one batch, which EWC's Fisher
reads.

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
from torch.nn import functional as F

from mcit_bench.core.records import IGNORE_INDEX
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


def answer_nll_each(batch: dict[str, torch.Tensor], outputs: object) -> torch.Tensor:
    """Each sample's mean answer-token NLL, [samples], as a batch of that sample alone gives it as the
    model's loss (0 for a sample with no answer token)."""
    logits = outputs.logits[:, :-1].float()
    labels = batch["labels"][:, 1:].to(logits.device)
    nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    counts = (labels != IGNORE_INDEX).sum(1)
    return nll.sum(1) / counts.clamp_min(1)


def linear_owners(model: nn.Module, params: dict[str, nn.Parameter]) -> dict[str, dict[str, str]]:
    """For each ``nn.Linear`` that owns some of ``params``: {"weight" and/or "bias": the parameter's name}."""
    names = {id(parameter): name for name, parameter in params.items()}
    owners: dict[str, dict[str, str]] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            for kind in ("weight", "bias"):
                parameter = getattr(module, kind)
                if parameter is not None and id(parameter) in names:
                    owners.setdefault(module_name, {})[kind] = names[id(parameter)]
    return owners


def per_sample_gradients(model: nn.Module, params: dict[str, nn.Parameter], batch: dict[str, torch.Tensor],
                         loss_each: Callable[[dict[str, torch.Tensor], object], torch.Tensor],
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
    """Each sample's gradient of its own loss (``loss_each``: [samples]) for every parameter of ``params``,
    from one forward and backward of the batch: the per-sample losses and, by name, [samples, *shape]
    (float32).

    A parameter of an ``nn.Linear`` gets its per-sample gradient from the layer's input and output
    gradient, summed over each sample's tokens (and over the layer's calls): the same numbers a batch of
    that sample alone gives, as the samples of a batch never mix in a transformer. Any other parameter
    has only the batch's gradient, which is one sample's in a batch of one. So with several samples the
    answer is None when some parameter is not an ``nn.Linear``'s, or when a layer's input is not
    [samples, tokens, width] (a vision encoder that flattens every image's patches into one axis, or a
    batch whose images are not one a sample): the caller then gives one sample a batch. Every record
    holds one image (a text-only one a blank), so a projector's first axis is the samples."""
    samples = int(batch["labels"].shape[0])
    owners = linear_owners(model, params)
    if samples > 1 and sum(map(len, owners.values())) < len(params):
        return None
    modules = dict(model.named_modules())
    grads: dict[str, torch.Tensor] = {}
    apart: list[bool] = []  # per layer call: could its rows be told apart by sample?

    def capture(kinds: dict[str, str]):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0].detach()
            apart.append(samples == 1 or (x.dim() >= 3 and x.shape[0] == samples))
            if not apart[-1] or not output.requires_grad:
                return

            def accumulate(grad: torch.Tensor) -> None:
                xs = x.reshape(samples, -1, x.shape[-1]).float()
                gs = grad.reshape(samples, -1, grad.shape[-1]).float()
                if "weight" in kinds:
                    grads[kinds["weight"]] = grads.get(kinds["weight"], 0) + torch.einsum("bto,bti->boi", gs, xs)
                if "bias" in kinds:
                    grads[kinds["bias"]] = grads.get(kinds["bias"], 0) + gs.sum(1)

            output.register_hook(accumulate)
        return hook

    handles = [modules[name].register_forward_hook(capture(kinds)) for name, kinds in owners.items()]
    try:
        outputs = model(**batch)
        losses = loss_each(batch, outputs)
        if not all(apart):
            return None
        losses.sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    read = {name for kinds in owners.values() for name in kinds.values()}
    for name, parameter in params.items():
        if name not in read:  # a batch of one here: its gradient is the sample's
            grads[name] = (parameter.grad.detach().float() if parameter.grad is not None
                           else torch.zeros_like(parameter, dtype=torch.float32))[None]
        elif name not in grads:  # the loss never reached it
            grads[name] = torch.zeros((samples, *parameter.shape), dtype=torch.float32, device=parameter.device)
    return losses.detach(), grads
