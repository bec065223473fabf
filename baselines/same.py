"""SAME (same; Xie et al., ICML 2026, the stabilised mixture of experts; the code is Prism's,
LAMDA-CL/Prism ``method/custom/same/integration.py``, ``PEFT/tuners/custom/same.py`` and
``config/methods/same.py``).

A mixture of LoRA experts, one per task of the stream, on the language model's feed-forward layers
(``gate_proj``, ``up_proj``, ``down_proj``: the config's ``peft_target_modules: "ffn"``), every expert and
router training on every task, stabilised by covariance-aware routing, curvature-aware gradient scaling
and adaptive expert freezing (``mcit_bench.adapters.stabilised`` says how, line by line). The projector
stays frozen (``--freeze_mm_mlp_adapter True``).

At evaluation the experts are weighed by a task mixture from the frozen guide encoder (Prism's
``RouterIntegration``, ``method/custom/specialized_integration.py`` lines 868-942): each task's prototype
is the mean CLIP image and instruction features of its training data, a sample's score for a task is
0.2 x its image cosine plus 0.8 x its instruction cosine to them, and the mixture is the softmax of 28 x
the scores (``mixture_logit_scale``); each layer multiplies its mean gate by it before keeping the top
two.

Scale: Prism gives each expert rank 8 (``lora_r`` 64 for CoIN's 8 tasks, 48 for UCIT's 6, 80 for TriGap's
10, ``lora_alpha`` twice that), and its mixture of the A's and of the B's makes the update's rank that of
one expert; the default keeps 8 and alpha / r = 2 on mcit-tiny too (smaller, and the update's rank falls
below seqft's 16), as it keeps the basis's 64 columns. docs/METHODS.md says what else differs and why.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from mcit_bench.adapters.experts import attach_adapters
from mcit_bench.adapters.lora import freeze_all, language_linear_names, unfreeze_projector
from mcit_bench.adapters.stabilised import SameState, StabilisedExperts, Stabilisers
from mcit_bench.methods.base import Capabilities, Method, MethodOptions, RunContext, Stage, register_method
from mcit_bench.methods.distributed import from_first_process
from mcit_bench.methods.guided import prototype_similarities, with_prototypes_of
from mcit_bench.methods.search import LR, Choice, Uniform

FEED_FORWARD = ("gate_proj", "up_proj", "down_proj")  # Prism's "ffn" preset (PEFT/utils/peft_target_modules.py)
# what Prism's checkpoint carries from task to task (_ROUTER_CARRY_BUFFER_MARKERS), besides the valid flag
CARRIED = ("prev_basis", "prev_spreads", "importance")


class SAMEOptions(MethodOptions):
    expert_rank: int = Field(default=8, gt=0)  # Prism's: lora_r = 8 x the task count
    scale: float = Field(default=2.0, gt=0)  # lora_alpha / lora_r: 128 / 64
    max_components: int = Field(default=64, gt=0)  # columns of the randomized basis
    cumulative_energy_ratio: float = Field(default=0.9, gt=0.0, le=1.0)
    window_size: int = Field(default=3, gt=0)  # the router scaling's smoothing window
    curvature_mu: float = Field(default=0.9, gt=0.0)
    tau_score: float = 0.1  # METHOD_CONFIG_BY_BACKBONE: 0.1 for LLaVA and InternVL
    mixture_logit_scale: float = Field(default=28.0, gt=0)  # RouterIntegration's default
    image_weight: float = Field(default=0.2, ge=0.0, le=1.0)  # _compute_cosine_similarities: 0.2 image, 0.8 text
    train_projector: bool = False  # --freeze_mm_mlp_adapter True


def feed_forward_names(model: nn.Module) -> list[str]:
    return [name for name in language_linear_names(model) if name.rsplit(".", 1)[-1] in FEED_FORWARD]


@register_method("same")
class SAME(Method):
    # the training routing and statistics are means over the micro-batch a process holds, so processes
    # that split a micro-batch route as the original's GPUs do, each by its own share, not as one process
    capabilities = Capabilities(can_shard=False, needs_guide=True)
    Options = SAMEOptions
    search_space = {**LR, "expert_rank": Choice((4, 8, 16)), "tau_score": Uniform(0.0, 0.3)}

    def __init__(self, options: SAMEOptions) -> None:
        super().__init__(options)
        self.state = SameState()
        self.layers: dict[str, StabilisedExperts] = {}
        self.prototypes: dict[str, torch.Tensor] = {}  # kind -> [trained tasks, guide width]
        self.experts = 0

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        freeze_all(model)
        o = self.options
        experts = self.experts = len(run.stream.tasks)
        knobs = Stabilisers(o.max_components, o.cumulative_energy_ratio, o.window_size, o.curvature_mu, o.tau_score)
        self.layers = attach_adapters(
            model, feed_forward_names(model),
            lambda name, linear: StabilisedExperts(linear.in_features, linear.out_features, experts, o.expert_rank,
                                                   o.scale, self.state, knobs))
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(".adapter." in name)
        if o.train_projector:
            unfreeze_projector(model)
        return model

    def before_task(self, stage: Stage, run: RunContext) -> None:
        self.state.task, self.state.step = stage.index - 1, 0
        for layer in self.layers.values():
            layer.start_task()

    def before_step(self, batch: dict[str, torch.Tensor], run: RunContext,
                    samples: list[dict[str, Any]] | None = None) -> None:
        self.state.step += 1
        self.state.token_mask = batch["attention_mask"].bool()

    def route(self, batch: dict[str, torch.Tensor], run: RunContext, oracle: torch.Tensor | None = None,
              samples: list[dict[str, Any]] | None = None) -> torch.Tensor | None:
        self.state.token_mask = batch["attention_mask"].bool()
        self.state.prior = self.task_mixture(samples, run) if self.prototypes else None
        return None

    def task_mixture(self, samples: list[dict[str, Any]], run: RunContext) -> torch.Tensor:
        """Each sample's softmax over the trained tasks of its weighted cosines to their prototypes, zero for
        the tasks not trained yet (whose prototypes Prism draws at random, so far below the trained ones'
        that their softmax weight is nil): [samples, experts]."""
        o = self.options
        similarity = prototype_similarities(self.prototypes, samples, run)
        scores = o.image_weight * similarity["image"] + (1 - o.image_weight) * similarity["text"]
        mixture = torch.softmax(o.mixture_logit_scale * scores.float(), dim=-1)
        return nn.functional.pad(mixture, (0, self.experts - mixture.shape[1]))

    def after_task(self, stage: Stage, run: RunContext) -> None:
        self.prototypes = with_prototypes_of(self.prototypes, stage.index - 1, stage, run)
        for layer in self.layers.values():
            layer.snapshot()
            # the first process writes the checkpoint every process would load for the next task
            for name in CARRIED:
                getattr(layer, name).copy_(from_first_process(getattr(layer, name)))

    def state_dict(self) -> dict[str, Any]:
        """The carried buffers (Prism's checkpoint extras: the previous task's basis and importance) and
        the tasks' prototypes."""
        state: dict[str, Any] = {f"prototype.{kind}": value for kind, value in self.prototypes.items()}
        for name, layer in self.layers.items():
            for buffer in CARRIED:
                state[f"{buffer}.{name}"] = getattr(layer, buffer).detach()
            state[f"prev_valid.{name}"] = layer.prev_valid
        return state

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        self.prototypes = {kind: state[f"prototype.{kind}"].float() for kind in ("image", "text")
                           if f"prototype.{kind}" in state}
        for name, layer in self.layers.items():
            for buffer in CARRIED:
                getattr(layer, buffer).copy_(state[f"{buffer}.{name}"])
            layer.prev_valid = bool(state[f"prev_valid.{name}"])
