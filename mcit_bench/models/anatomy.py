"""The parts of a vision-language model the harness works with, whatever its family: the language
model, the projector, the vision tower, and the image features and rows per sample. Adapters,
methods and sharding find a model's parts here, never in how it was loaded."""

from __future__ import annotations

import torch
from torch import nn

from mcit_bench.core.errors import ConfigError
from mcit_bench.models.blank_image import blank_image_inputs


def language_model(model: nn.Module) -> nn.Module:
    """The decoder stack of a vision-language model (without its LM head)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None:
        raise ConfigError(f"{type(model).__name__} exposes no language model (get_decoder); it cannot be adapted")
    return decoder


# module names of the vision-language projector and the vision encoder, per architecture family
PROJECTOR_NAMES = ("multi_modal_projector", "visual.merger")  # LLaVA and InternVL; Qwen2-VL and Qwen2.5-VL
VISION_TOWER_NAMES = ("vision_tower", "visual")


def _named_part(model: nn.Module, suffixes: tuple[str, ...], what: str) -> nn.Module:
    for module_name, module in model.named_modules():
        if any(module_name == suffix or module_name.endswith("." + suffix) for suffix in suffixes):
            return module
    raise ConfigError(f"{type(model).__name__} has no {what} this harness knows")


def projector(model: nn.Module) -> nn.Module:
    """The vision-language projector (LLaVA's ``multi_modal_projector``, Qwen2-VL's ``visual.merger``)."""
    return _named_part(model, PROJECTOR_NAMES, "vision-language projector")


def vision_tower(model: nn.Module) -> nn.Module:
    """The vision encoder (LLaVA's ``vision_tower``; Qwen2-VL's ``visual``, its merger included)."""
    return _named_part(model, VISION_TOWER_NAMES, "vision tower")


def image_feature_dim(model: nn.Module) -> int:
    """Width of the vision encoder's own features (before the projector)."""
    config = vision_tower(model).config
    return getattr(config, "embed_dim", None) or config.hidden_size  # Qwen2-VL names its width embed_dim


def patches_per_image(batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Rows each image occupies in a vision encoder that flattens all images together (Qwen2-VL:
    pixel values are [patches of all images, ...] with each image's grid in ``image_grid_thw``);
    None for encoders with an image axis (LLaVA)."""
    grid = batch.get("image_grid_thw")
    return None if grid is None else grid.prod(dim=-1)


def samples_with_images(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Which samples of a batch show an image (text-only ones, as text-only ScienceQA items, do not)."""
    return (batch["input_ids"] == model.config.image_token_id).any(dim=1)


@torch.no_grad()
def pooled_image_features(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, from the frozen vision encoder: (summary, max-pool) of its image's features, [samples, dim] each.

    The summary is the class token where the encoder has one (CLIP), else the mean over patches. A
    text-only sample has no image: its rows are zeros, so a router compares it by its text alone.
    """
    has_image = samples_with_images(model, batch)
    width = image_feature_dim(model)
    vision = vision_tower(model)
    dtype = next(vision.parameters()).dtype
    summary = torch.zeros(len(has_image), width, dtype=dtype, device=has_image.device)
    pooled = torch.zeros_like(summary)
    if not has_image.any():
        blank = blank_image_inputs(model)
        if blank is not None:  # the vision layers run as in a batch with images (models/blank_image.py)
            vision_features(vision, blank["pixel_values"].to(dtype), patches_per_image(blank), blank)
        return summary, pooled
    pixels = batch["pixel_values"].to(dtype)
    rows = patches_per_image(batch)
    if rows is None:
        features = vision_features(vision, pixels, rows, batch)  # [images, tokens, dim]
        if features.shape[0] != int(has_image.sum()):
            raise ConfigError(f"the processor gives {features.shape[0]} image tiles for {int(has_image.sum())} "
                              f"samples with an image; methods that route by image need one tile per image "
                              f"(InternVL: set crop_to_patches to false in the model's preprocessor_config.json)")
        image_summary, image_pooled = features[:, 0], features.amax(1)
    else:
        flat = vision_features(vision, pixels, rows, batch)  # [all patches, dim]
        parts = flat.split(rows.tolist())
        image_summary = torch.stack([part.mean(0) for part in parts])
        image_pooled = torch.stack([part.amax(0) for part in parts])
    summary[has_image], pooled[has_image] = image_summary.to(dtype), image_pooled.to(dtype)
    return summary, pooled


def vision_features(vision: nn.Module, pixels: torch.Tensor, rows: torch.Tensor | None,
                    batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The vision encoder's last hidden state: [images, tokens, dim], or [all patches, dim] for an
    encoder that flattens every image's patches (``rows`` per image, Qwen2-VL)."""
    if rows is None:
        return vision(pixel_values=pixels).last_hidden_state
    return vision(pixels, grid_thw=batch["image_grid_thw"]).last_hidden_state


def image_row_samples(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """The sample of every image row the vision side sees, keyed by that axis's length, wherever it is
    not simply the batch: a vision encoder that flattens the patches of all images (one image per
    sample; before and after the merge of neighbouring patches), or an image axis that skips the
    text-only samples of a batch."""
    has_image = samples_with_images(model, batch)
    samples = has_image.nonzero().flatten()  # image i belongs to sample samples[i]
    rows = patches_per_image(batch)
    if rows is None:
        return {} if bool(has_image.all()) else {len(samples): samples}
    merged = rows // vision_tower(model).config.spatial_merge_size ** 2
    samples = samples.to(rows.device)
    return {int(rows.sum()): samples.repeat_interleave(rows), int(merged.sum()): samples.repeat_interleave(merged)}
