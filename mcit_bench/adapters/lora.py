"""Plain LoRA on the language model's linear layers, through peft, without wrapping the model."""

from __future__ import annotations

from torch import nn

from mcit_bench.models.anatomy import language_model, projector


def language_linear_names(model: nn.Module) -> list[str]:
    """Full names of every ``nn.Linear`` inside the language model (its LM head excluded)."""
    decoder = language_model(model)
    prefix = next(name for name, module in model.named_modules() if module is decoder)
    return [f"{prefix}.{name}" for name, module in decoder.named_modules() if isinstance(module, nn.Linear)]


def freeze_all(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def unfreeze_projector(model: nn.Module) -> None:
    for parameter in projector(model).parameters():
        parameter.requires_grad_(True)


def inject_lora(model: nn.Module, rank: int, alpha: float, dropout: float = 0.0) -> nn.Module:
    """Add LoRA (A ~ Kaiming, B = 0, peft's default) to the language model's linear layers.

    Everything else is frozen; only the LoRA matrices train. The model keeps its class, so
    ``generate`` and parameter names stay those of the base model plus ``lora_`` entries.
    """
    from peft import LoraConfig, inject_adapter_in_model

    freeze_all(model)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=language_linear_names(model),
                        bias="none")
    model = inject_adapter_in_model(config, model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)
    return model
