"""A text-only batch runs the vision side too, on a blank image whose features carry zero weight.

LLaVA's own training gives a text-only sample a blank image and adds a zero-length slice of its
features to the sequence (haotian-liu/LLaVA, llava/train/train.py, ``LazySupervisedDataset``: an
image of zeros where the sample has none; llava/model/llava_arch.py,
``prepare_inputs_labels_for_multimodal``: ``cur_image_features[0:0]``), so every step runs the same
modules whatever its batch holds. Here that matters beyond LLaVA's reasons: under ``--shard fsdp``
every forward of a sharded vision layer gathers its weights from every process, and a process whose
micro-batch has no image would skip gathers the others wait on (a hang); under DDP the projector it
did not use has no gradient (DDP's unused-parameter error); and the replicated gradients'
all-reduce would see a shorter buffer. So a forward of the whole model that gets no image (training,
or the first step of generation) runs the vision encoder and projector on a blank image right after
the input embeddings, where the model itself would, and adds 0 x their sum to the embeddings: the
same collectives in the same order on every process, a zero gradient for the projector, and not one
value of the output changed. A selector that reads image features of a batch without images runs
the vision encoder on the same blank image and discards it (:func:`blank_image_inputs`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

BLANK = "_mcit_blank_image"  # the model attribute holding the processor's inputs for the blank image
# whether the latest forward of the model (there is one per process) got no image; it stays set
# through that forward's backward, where recomputed layers (gradient checkpointing) see the blank again
_latest_forward_blank = [False]


def vision_sees_blank() -> bool:
    """Whether the vision side now runs on the blank image: an adapter there routes its rows to the
    training task (their output is multiplied by zero) instead of to samples that have no image."""
    return _latest_forward_blank[0]


def blank_image_inputs(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The processor's image inputs for the blank image, once :func:`install_blank_image` ran."""
    return model.__dict__.get(BLANK)


def zero_weight(features: Any) -> torch.Tensor:
    """0 x the sum of every tensor of ``features``: a zero that keeps them in the autograd graph."""
    output = getattr(features, "pooler_output", features)
    tensors = [output] if isinstance(output, torch.Tensor) else [t for t in output if isinstance(t, torch.Tensor)]
    return sum(tensor.float().sum() for tensor in tensors) * 0.0


def install_blank_image(model: nn.Module, image_inputs: dict[str, torch.Tensor], device: torch.device) -> None:
    """Make every forward of ``model`` without an image run the vision side on ``image_inputs``,
    held on ``device`` once rather than copied there for every text-only batch.

    Install it after ``--shard fsdp`` has wrapped the model: the zero is then added after FSDP's own
    hook on the input embeddings has seen their output, which does not depend on a trained weight,
    so no process gathers the embeddings again in backward for a zero that another process lacks."""
    on_device = {name: value.to(device) for name, value in image_inputs.items()}
    armed = [False]

    def arm(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        prefill = cache is None or not hasattr(cache, "get_seq_length") or cache.get_seq_length() == 0
        # generation encodes a batch's images before its first forward and passes them as mm_encoder_outputs
        images = kwargs.get("pixel_values") is not None or kwargs.get("mm_encoder_outputs") is not None
        armed[0] = not images and prefill and kwargs.get("inputs_embeds") is None
        _latest_forward_blank[0] = armed[0]

    def add_blank(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not armed[0]:
            return output
        armed[0] = False
        features = model.get_image_features(**on_device)
        return output + zero_weight(features).to(output.dtype)

    model.__dict__[BLANK] = on_device
    model.register_forward_pre_hook(arm, with_kwargs=True)
    model.get_input_embeddings().register_forward_hook(add_blank)
