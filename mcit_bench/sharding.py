"""FSDP2 sharding of the frozen base model (``--shard fsdp``): what every process holds is 1/N of it.

What is sharded, and why: in continual instruction tuning the base model (language model, vision
tower, embeddings) is frozen and is nearly all of the memory, while what trains (LoRA, experts,
projector, task keys) is a few percent of it. So the layers the model declares unsplittable
(``_no_split_modules``: decoder layers, vision encoder layers, vision embeddings), the input
embeddings and the LM head are each wrapped with ``fully_shard`` on a one-dimensional mesh over all
processes (:func:`shard_units` says why nothing above them is), and every parameter the method
added or that trains when the model is sharded is left out (``ignored_params``): it stays a plain,
replicated tensor, its gradient averaged over processes after backward
(:func:`average_replicated_gradients`), exactly as DDP averages it.

That choice keeps every method's hooks as they are: EWC's Fisher and anchor are taken on the full
values of what trains, LwF's teacher is a copy of those full values, BranchLoRA's frozen branches
and old routers and D-MoLE's old experts are plain tensors frozen like any other, and parameters a
method adds between tasks (branches, experts, projector copies) are plain tensors too, with no
re-sharding. The frozen base keeps ``requires_grad`` false under FSDP, and the checkpoints hold only
what trains, so the main process writes them from its replicated copy as in an unsharded run.

On GPUs the mesh is over CUDA with NCCL and, under ``--precision bf16``, FSDP2's
``MixedPrecisionPolicy`` (bf16 parameters in compute, float32 gradient reduction); on CPU it is
gloo, which is what the tests run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from mcit_bench.errors import ConfigError

if TYPE_CHECKING:
    from accelerate import Accelerator


def layer_classes(model: nn.Module) -> set[str]:
    """The class names the model declares must stay whole (Hugging Face's ``_no_split_modules``)."""
    names: set[str] = set()
    for module in model.modules():
        declared = getattr(module, "_no_split_modules", None)
        if declared:
            names.update(declared)
    return names


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules wrapped one by one: every instance of a declared layer class, the input embeddings
    and the LM head (once when they are tied).

    Each unit gathers its own weights in its own forward, so a method may call any part of the model
    on its own (selectors run the vision tower and the embeddings). Nothing above the layers is
    wrapped: a wrapped module changes class, and Hugging Face finds what a model records (hidden
    states) by its class, so wrapping the vision tower or the language model would lose them. What is
    left outside the units (norms, position tables, the projector) is a fraction of a percent of a 7B
    model and stays replicated.
    """
    classes = layer_classes(model)
    layers = [module for module in model.modules() if type(module).__name__ in classes and module is not model]
    if not any(any(p.numel() for p in layer.parameters()) for layer in layers):
        raise ConfigError(f"--shard fsdp found no layer classes in {type(model).__name__} (it declares "
                          f"{sorted(classes) or 'no _no_split_modules'}); use a Hugging Face model that "
                          f"declares its decoder layers, or run without --shard")
    embeddings, head = model.get_input_embeddings(), model.get_output_embeddings()
    units = layers + [embeddings]
    if head is not None and head.weight is not embeddings.weight:
        units.append(head)
    return units


def check_can_shard(method_name: str, can_shard: bool, processes: int, full: bool) -> None:
    """Refuse, before anything loads, a sharded run that cannot be one."""
    if processes < 2:
        raise ConfigError("--shard fsdp needs at least two processes to shard over; launch with torchrun "
                          "--nproc_per_node N (or accelerate launch --num_processes N), or drop --shard")
    if not can_shard:
        raise ConfigError(f"method {method_name!r} declares that it cannot run sharded; drop --shard fsdp for it")
    if full:
        raise ConfigError("--shard fsdp shards the frozen base model, and --full trains all of it; drop one "
                          "(full fine-tuning runs under DDP without --shard)")


def shard_model(model: nn.Module, accelerator: Accelerator, precision: str, keep: set[nn.Parameter]) -> nn.Module:
    """Wrap the frozen base of ``model`` with FSDP2 over every process; ``keep`` (what the method
    added or trains) stays replicated."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    device_type = accelerator.device.type
    mesh = init_device_mesh(device_type, (accelerator.num_processes,))
    policy = MixedPrecisionPolicy()
    if precision == "bf16" and device_type == "cuda":
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for unit in shard_units(model):
        # each unit is its own FSDP root (nothing above it is wrapped), and a root keeps its gathered
        # weights after forward unless told otherwise: then no process would hold less than the model
        fully_shard(unit, mesh=mesh, mp_policy=policy, reshard_after_forward=True,
                    ignored_params=keep & set(unit.parameters()))
    return model


def predicted_bytes(model: nn.Module, keep: set[nn.Parameter], processes: int) -> dict[str, int]:
    """The bytes one process holds after :func:`shard_model` over ``processes``, from the unsharded
    model: a sharded weight is cut along its first dimension into ``processes`` equal parts (FSDP2
    pads the last one), everything else is held whole. docs/DISTRIBUTED.md's estimates use this."""
    in_units = {id(p) for unit in shard_units(model) for p in unit.parameters()}
    sharded = replicated = 0
    for parameter in model.parameters():
        size = parameter.element_size() * (parameter.numel() // max(1, parameter.shape[0]) if parameter.dim() else 1)
        if id(parameter) in in_units and parameter not in keep and parameter.dim():
            sharded += -(-parameter.shape[0] // processes) * size
        else:
            replicated += parameter.numel() * parameter.element_size()
    return {"sharded": sharded, "replicated": replicated}


def is_sharded(parameter: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(parameter, DTensor)


def local_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of parameters this process holds: of the sharded modules (its shards) and of the rest."""
    sharded = replicated = 0
    for parameter in model.parameters():
        if is_sharded(parameter):
            local = parameter.to_local()
            sharded += local.numel() * local.element_size()
        else:
            replicated += parameter.numel() * parameter.element_size()
    return {"sharded": sharded, "replicated": replicated}


def check_replicated(method_name: str, model: nn.Module, trainable: list[nn.Parameter]) -> None:
    """A method that starts training a weight of the sharded base after sharding cannot run sharded."""
    names = {id(p): name for name, p in model.named_parameters()}
    inside = [names.get(id(p), "?") for p in trainable if is_sharded(p)]
    if inside:
        raise ConfigError(f"method {method_name!r} trains {inside[0]}, a weight of the sharded base model "
                          f"({len(inside)} such); it cannot run with --shard fsdp, drop --shard for it")


def average_replicated_gradients(parameters: list[nn.Parameter], processes: int) -> None:
    """DDP's all-reduce for what trains outside the shards: every process ends with the mean gradient."""
    import torch.distributed as dist

    grads = [p.grad for p in parameters if p.grad is not None and not is_sharded(p)]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= processes
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()
