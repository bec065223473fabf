"""ModalPrompt (modalprompt; Zeng et al., arXiv:2410.05849, "ModalPrompt: Dual-Modality Guided Prompt for
Continual Learning of Large Multimodal Models"; MCITlib ModalPrompt/, 2956dfd, the code followed here).

No LoRA: each task learns ``prefix_len`` prompt tokens placed right after the first token of the input
(BOS in LLaVA), and a transform of its own (Linear(hidden, hidden), SiLU, Linear(hidden, CLIP width);
``llava/model/language_model/ModalPrompt.py`` lines 92-105). A task's prototype is the mean of its
transformed prompt embeddings (``llava_arch.py`` line 205). In training the current task's prompt is
inserted (``transfer_num`` 1, lines 218-221) and the loss adds (1 - cos(CLIP image feature, prototype))
and (1 - cos(CLIP text feature, prototype)), each averaged over the batch (lines 241-242;
``llava_trainer.py`` line 272: a plain sum with the NLL); only the current task's prompt and transform
train (``set_cur_task``; the embedding mask of ``reset_vocab_size``). At inference each sample gets the
prompt of the task whose prototype is nearest, by 0.5 cos(image) + 0.5 cos(text) (lines 210-215, 264-269).
The prompt tokens start as copies of random rows of the word embeddings (``add_prompt_tokens``).

The official code adds the prompt tokens to the vocabulary; here they are rows of the method's own,
spliced over placeholder positions by a hook on the input embeddings, which leaves the model's
vocabulary and output head untouched (the official prompt rows of the head are never predicted either).
docs/METHODS.md says what else differs.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from mcit_bench.core.records import IGNORE_INDEX
from mcit_bench.methods.base import Capabilities, Method, MethodOptions, RunContext, Stage, register_method
from mcit_bench.methods.search import LR, Choice
from mcit_bench.models.anatomy import language_model

# what a [samples, tokens] input gets at an inserted prompt position
FILL = {"attention_mask": 1, "labels": IGNORE_INDEX}


class ModalPromptOptions(MethodOptions):
    prefix_len: int = Field(default=10, gt=0)  # the scripts' --prefix_len
    image_weight: float = Field(default=0.5, ge=0.0, le=1.0)  # lam, llava_arch.py line 208


def insert_after_first(batch: dict[str, torch.Tensor], count: int) -> torch.Tensor:
    """Make room for ``count`` prompt tokens right after each sample's first token (its first attended
    position: 0 when right-padded, after the padding when left-padded), in every input aligned with
    the tokens; returns the [samples, tokens] mask of the inserted positions."""
    ids = batch["input_ids"]
    rows, width = ids.shape
    first = batch["attention_mask"].long().argmax(dim=1)  # the first attended position
    positions = torch.arange(width + count, device=ids.device).unsqueeze(0)
    inserted = (positions > first.unsqueeze(1)) & (positions <= first.unsqueeze(1) + count)
    source = positions - inserted.long().cumsum(dim=1)  # where each new position's value comes from
    for name, value in list(batch.items()):
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape == (rows, width):
            moved = value.gather(1, source.clamp(max=width - 1))
            fill = FILL.get(name, ids.gather(1, first.unsqueeze(1)) if name == "input_ids" else 0)
            batch[name] = torch.where(inserted, torch.as_tensor(fill, dtype=value.dtype, device=value.device), moved)
    return inserted


@register_method("modalprompt")
class ModalPrompt(Method):
    capabilities = Capabilities(grows_params=True, selects_task=True, needs_guide=True, can_shard=False)
    Options = ModalPromptOptions
    search_space = {**LR, "prefix_len": Choice((5, 10, 20))}

    def __init__(self, options: ModalPromptOptions) -> None:
        super().__init__(options)
        self.model: nn.Module | None = None
        self.task = -1
        # the rows spliced over the inserted positions of the next forward: (mask, [samples, prefix, hidden])
        self.splice: tuple[torch.Tensor, torch.Tensor] | None = None
        self.features: tuple[torch.Tensor, torch.Tensor] | None = None  # the training batch's guide features

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        embeddings = language_model(model).get_input_embeddings()
        self.hidden, self.width = embeddings.embedding_dim, run.guide.width
        model.add_module("modal_prompts", nn.ParameterList())
        model.add_module("modal_transforms", nn.ModuleList())
        embeddings.register_forward_hook(self.splice_prompts)
        self.model = model
        return model

    def splice_prompts(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        """The prompt rows over the inserted positions, on the pass whose tokens they were inserted into
        (a decoding step's single token is left alone)."""
        if self.splice is None or output.shape[:2] != self.splice[0].shape:
            return output
        mask, rows = self.splice
        spliced = output.clone()
        spliced[mask] = rows.reshape(-1, rows.shape[-1]).to(output.dtype)
        return spliced

    # ------------------------------------------------------------------ tasks
    def grow(self, generator: torch.Generator) -> None:
        """A new task's prompt (copies of random word embeddings) and transform."""
        weight = language_model(self.model).get_input_embeddings().weight
        rows = torch.randint(weight.shape[0], (self.options.prefix_len,), generator=generator)
        self.model.modal_prompts.append(nn.Parameter(weight.detach()[rows.to(weight.device)].clone().float()))
        transform = nn.Sequential(nn.Linear(self.hidden, self.hidden), nn.SiLU(), nn.Linear(self.hidden, self.width))
        self.model.modal_transforms.append(transform.to(weight.device))

    def before_task(self, stage: Stage, run: RunContext) -> None:
        self.task = stage.index - 1
        while len(self.model.modal_prompts) <= self.task:
            self.grow(torch.Generator().manual_seed(run.seed * 1000 + len(self.model.modal_prompts)))
        for index, prompt in enumerate(self.model.modal_prompts):
            prompt.requires_grad_(index == self.task)
        for index, transform in enumerate(self.model.modal_transforms):
            transform.requires_grad_(index == self.task)

    def prototypes(self, tasks: int) -> torch.Tensor:
        """[tasks, guide width]: each task's mean transformed prompt embedding."""
        return torch.stack([self.model.modal_transforms[t](self.model.modal_prompts[t]).mean(dim=0)
                            for t in range(tasks)])

    def place(self, batch: dict[str, torch.Tensor], tasks: torch.Tensor) -> None:
        mask = insert_after_first(batch, self.options.prefix_len)
        rows = torch.stack([self.model.modal_prompts[int(t)] for t in tasks.tolist()])
        self.splice = (mask, rows)

    # ------------------------------------------------------------------ training
    def before_step(self, batch: dict[str, torch.Tensor], run: RunContext,
                    samples: list[dict[str, Any]] | None = None) -> None:
        image, text = run.guide.features(samples)
        self.features = (image.to(run.device), text.to(run.device))
        self.place(batch, torch.full((len(samples),), self.task))

    def loss(self, batch: dict[str, torch.Tensor], outputs: Any, run: RunContext) -> dict[str, torch.Tensor]:
        prototype = self.prototypes(self.task + 1)[self.task].float()
        image, text = self.features
        return {"image_alignment": 1 - F.cosine_similarity(image, prototype[None], dim=-1).mean(),
                "text_alignment": 1 - F.cosine_similarity(text, prototype[None], dim=-1).mean()}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def routes_by_choice_alone(self) -> bool:
        return True

    def route(self, batch: dict[str, torch.Tensor], run: RunContext, oracle: torch.Tensor | None = None,
              samples: list[dict[str, Any]] | None = None) -> torch.Tensor | None:
        trained = self.task + 1
        if trained == 0:
            self.splice = None
            return None
        if oracle is not None:
            chosen = oracle.to(run.device)
        else:
            image, text = (f.to(run.device) for f in run.guide.features(samples))
            prototypes = self.prototypes(trained).float()
            lam = self.options.image_weight
            coef = (lam * F.cosine_similarity(image[:, None], prototypes[None], dim=-1)
                    + (1 - lam) * F.cosine_similarity(text[:, None], prototypes[None], dim=-1))
            chosen = coef.argmax(dim=1)
        self.place(batch, chosen)
        return chosen

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"task": self.task, "tasks": len(self.model.modal_prompts)}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        self.task = int(state["task"])
        while len(self.model.modal_prompts) < int(state["tasks"]):  # shapes only: the weights load next
            self.grow(torch.Generator().manual_seed(0))
