"""FSDP2 sharding of the frozen base model (``--shard fsdp``): what every process holds is 1/N of it.

What is sharded, and why: in continual instruction tuning the base model (language model, vision
tower, embeddings) is frozen and is nearly all of the memory, while what trains (LoRA, experts,
projector, task keys) is a few percent of it. So the layers the model declares unsplittable
(``_no_split_modules``: decoder layers, vision encoder layers, vision embeddings), the input
embeddings and the LM head are each wrapped with ``fully_shard`` on a one-dimensional mesh over all
processes (:func:`shard_units` says why no part above them is; one root over the whole model ties
them together and shards nothing itself), and every parameter the method
added or that trains when the model is sharded is left out (``ignored_params``): it stays a plain,
replicated tensor, its gradient averaged over processes after backward
(:func:`average_replicated_gradients`), exactly as DDP averages it.

That choice keeps every method's hooks as they are: EWC's Fisher and anchor are taken on the full
values of what trains, LwF's teacher is a copy of those full values, BranchLoRA's frozen branches
and old routers and D-MoLE's old experts are plain tensors frozen like any other, and parameters a
method adds between tasks (branches, experts, projector copies) are plain tensors too, with no
re-sharding. The frozen base keeps ``requires_grad`` false under FSDP, and the checkpoints hold only
what trains, so the main process writes them from its replicated copy as in an unsharded run.

Evaluation gathers the whole base once (:func:`gathered`), so generation runs on each process alone.

On GPUs the mesh is over CUDA with NCCL and, under ``--precision bf16``, FSDP2's
``MixedPrecisionPolicy`` (bf16 parameters in compute, float32 gradient reduction); on CPU it is
gloo, which is what the tests run.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

from mcit_bench.core.errors import ConfigError

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
    on its own (selectors run the vision tower and the embeddings). No part between the layers and
    the whole model is wrapped: a wrapped module changes class, and Hugging Face finds what a model
    records (hidden states) by its class, so wrapping the vision tower or the language model would
    lose them. What is left outside the units (norms, position tables, the projector) is a fraction
    of a percent of a 7B model and stays replicated; the root over the whole model (:func:`shard_model`)
    holds none of it.
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


# FSDP2's ``fully_shard`` is public from torch 2.6 and takes ``ignored_params`` from 2.7; from 2.8 a
# root's ``reshard_after_forward`` is honoured and ``set_reshard_after_forward`` reaches every unit,
# which evaluation's one gather (:func:`gathered`) relies on
SHARD_TORCH_FLOOR = (2, 8)


def torch_release(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version string such as ``2.13.0+cpu``."""
    major, minor = (version.split("+")[0].split(".") + ["0"])[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def check_can_shard(method_name: str, can_shard: bool, processes: int, trains_base: bool,
                    torch_version: str = torch.__version__) -> None:
    """Refuse, before anything loads, a sharded run that cannot be one."""
    if torch_release(torch_version) < SHARD_TORCH_FLOOR:
        floor = ".".join(map(str, SHARD_TORCH_FLOOR))
        raise ConfigError(f"--shard fsdp needs torch {floor} or newer (FSDP2 with ignored parameters and one "
                          f"root over the model), and this is torch {torch_version}; upgrade torch or drop --shard")
    if processes < 2:
        raise ConfigError("--shard fsdp needs at least two processes to shard over; launch with torchrun "
                          "--nproc_per_node N (or accelerate launch --num_processes N), or drop --shard")
    if not can_shard:
        raise ConfigError(f"method {method_name!r} declares that it cannot run sharded; drop --shard fsdp for it")
    if trains_base:
        raise ConfigError(f"--shard fsdp shards the frozen base model, and method {method_name!r} with these "
                          f"options trains all of it (full fine-tuning); drop one (full fine-tuning runs under DDP "
                          f"without --shard)")


def shard_model(model: nn.Module, accelerator: Accelerator, precision: str, keep: set[nn.Parameter]) -> nn.Module:
    """Wrap the frozen base of ``model`` with FSDP2 over every process; ``keep`` (what the method
    added or trains) stays replicated.

    Every unit of :func:`shard_units` is sharded on its own, then one root over the whole model ties
    them together (it shards nothing itself: norms, position tables and a frozen projector stay
    whole), so the units share one set of streams and their gathers overlap compute. Within each
    stack of layers each layer gathers the next one's weights during its own forward, and the
    previous one's during its backward.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    device_type = accelerator.device.type
    mesh = init_device_mesh(device_type, (accelerator.num_processes,))
    policy = MixedPrecisionPolicy()
    if precision == "bf16" and device_type == "cuda":
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    units = shard_units(model)
    stacks = unit_stacks(model, units)
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=policy, reshard_after_forward=True,
                    ignored_params=keep & set(unit.parameters()))
    in_units = {p for unit in units for p in unit.parameters()}
    # the root holds no shards of its own: what lies outside the units (norms, position tables) is a
    # fraction of a percent of the model, and a method may call the part it sits in on its own,
    # outside the root's forward, where a root's shards would not be gathered
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=True,
                ignored_params={p for p in model.parameters() if p not in in_units} | set(keep))
    # FSDP2 makes the first module to run forward its root; a unit called on its own first (the
    # selectors' vision tower, generation encoding the images before its first forward) would then
    # refuse the model's own root, so the root is settled now (torch has no public call for it)
    model._get_fsdp_state()._lazy_init()
    for stack in stacks:
        for before, after in zip(stack, stack[1:]):
            before.set_modules_to_forward_prefetch([after])
            after.set_modules_to_backward_prefetch([before])
    return model


def unit_stacks(model: nn.Module, units: list[nn.Module]) -> list[list[nn.Module]]:
    """The units that run one after another: those that are consecutive layers of one ``nn.ModuleList``
    (decoder layers, vision encoder layers), in order."""
    chosen = {id(unit) for unit in units}
    stacks = []
    for module in model.modules():
        if isinstance(module, nn.ModuleList):
            stack = [layer for layer in module if id(layer) in chosen]
            if len(stack) > 1:
                stacks.append(stack)
    return stacks


@contextmanager
def gathered(model: nn.Module, sharded: bool):
    """Every sharded unit of ``model`` gathered once and kept whole inside the block (evaluation:
    generation would otherwise gather each unit's weights for every token it generates, and every
    process would have to step in lockstep); resharded after it. Nothing to do when not ``sharded``."""
    if not sharded:
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    units = [module for module in model.modules() if isinstance(module, FSDPModule)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.set_reshard_after_forward(True, recurse=False)
            unit.reshard()


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
    """DDP's all-reduce for what trains outside the shards: every process ends with the mean gradient.

    Every process reduces the same buffer: a parameter its micro-batches did not reach (a branch or
    expert no sample of its share routed to) enters as zeros beside a flag, and one that no process
    reached keeps no gradient, as in one process (AdamW then leaves it as it is)."""
    import torch.distributed as dist

    replicated = [p for p in parameters if not is_sharded(p)]
    if not replicated:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in replicated]
    reached = torch.tensor([float(p.grad is not None) for p in replicated], dtype=grads[0].dtype,
                           device=grads[0].device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [reached])
    dist.all_reduce(flat)
    reached_anywhere = flat[-len(replicated):].tolist()
    offset = 0
    for index, (parameter, grad) in enumerate(zip(replicated, grads)):
        parameter.grad = (flat[offset:offset + grad.numel()].view_as(grad) / processes if reached_anywhere[index]
                          else None)
        offset += grad.numel()
