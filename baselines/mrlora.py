"""MR-LoRA (mrlora; Zhao et al., "MLLM-CL: Continual Learning for Multimodal Large Language Models",
arXiv 2506.05453; official code bjzhb666/MLLM-CL).

Parameter isolation with a router that is the model itself:
- **Experts**: one LoRA per task on every linear layer of the language model, each trained alone on
  its task over the frozen base (``scripts/LLaVA/Train_dom_single/*.sh``: every expert starts from the
  base model, not from the previous expert).
- **Router**: one more LoRA, trained on a few stored samples of every task seen so far
  (``router_samples`` per task; the published router data holds 20 per task) to answer, given the
  routing prompt (a list of the experts with a description each, then the user's question), the
  label of the expert to use (``0_train_router.sh``; the prompt of
  ``ETrain/Eval/LLaVA/CoIN/model_agents_select_lora.py``). It is trained again, from a fresh start,
  after every task, because the list of experts grows.
- **Inference** (two stages): the router LoRA generates a label for the sample; the chosen expert
  answers. The label is read as ``choose_ans`` reads it: an output with more than one character that
  is no label is illegal; otherwise the first label, in label order, found in the output; an illegal
  output picks an expert at random (here: a fixed function of the seed and the question, so a
  resumed run chooses alike).

docs/METHODS.md gives the sources line by line and what differs (the projector, labels, router rate).
"""

from __future__ import annotations

import math
import zlib
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field
from torch import nn

from mcit_bench.adapters.experts import Routing, TaskExperts, attach_adapters, kaiming_down
from mcit_bench.adapters.lora import freeze_all, language_linear_names
from mcit_bench.core.errors import ConfigError
from mcit_bench.methods.base import (
    Capabilities,
    Method,
    MethodOptions,
    RunContext,
    Stage,
    register_method,
    rows_of,
    training_batch,
)
from mcit_bench.methods.search import LR, Choice, LogUniform

if TYPE_CHECKING:
    from mcit_bench.data.stream import TaskDef

ROUTER = -2  # the owner id of the router's LoRA among the experts (task ids are 0, 1, ...)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class MRLoRAOptions(MethodOptions):
    rank: int = Field(default=16, gt=0)  # every expert's and the router's (the scripts: 128 on 7B)
    alpha: float = Field(default=32.0, gt=0)  # alpha / rank = 2, the scripts' 256 / 128
    router_samples: int = Field(default=20, gt=0)  # per task
    router_epochs: int = Field(default=40, gt=0)  # 0_train_router.sh
    router_batch_size: int = Field(default=32, gt=0)  # 0_train_router.sh: 4 per device on 8 devices
    # the harness's default rate: the scripts' ratio to the experts' (5e-6 against 2e-5) left mcit-tiny's
    # router at chance (docs/METHODS.md)
    router_lr: float = Field(default=1e-3, gt=0)
    router_max_new_tokens: int = Field(default=4, gt=0)
    labels: Literal["digits", "letters"] = "digits"


def expert_labels(count: int, kind: str) -> list[str]:
    """Experts' labels: 1, 2, ... or A, B, ... (the official code's letters, for its five tasks)."""
    if kind == "letters":
        return list(LETTERS[:count])
    return [str(index + 1) for index in range(count)]


def routing_prompt(question: str, tasks: list[TaskDef], labels: list[str]) -> str:
    """The routing question: the experts, each with its description, then the user's question, then
    the instruction to answer with the label alone (the official prompt's three parts, in our words)."""
    experts = "\n".join(f"{label}: {task.like or task.name} ({task.type})" for label, task in zip(labels, tasks))
    return (f"Choose the expert for the question below.\nExperts:\n{experts}\nQuestion: {question}\n"
            f"Answer with the expert's label only.")


def chosen_expert(output: str, labels: list[str], fallback: int) -> int:
    """``choose_ans``: an exact label; else, unless more than one character is no label's, the first
    label in order found in the output; else ``fallback``."""
    output = output.strip()
    if output in labels:
        return labels.index(output)
    alphabet = set("".join(labels))
    if sum(character not in alphabet for character in output) > 1:
        return fallback
    return next((index for index, label in enumerate(labels) if label in output), fallback)


@register_method("mrlora")
class MRLoRA(Method):
    capabilities = Capabilities(grows_params=True, uses_memory=True, selects_task=True)
    Options = MRLoRAOptions
    search_space = {**LR, "rank": Choice((8, 16, 32)), "router_lr": LogUniform(1e-4, 1e-2)}

    def __init__(self, options: MRLoRAOptions) -> None:
        super().__init__(options)
        self.routing = Routing()
        self.layers: dict[str, TaskExperts] = {}
        self.model: nn.Module | None = None
        self.tasks: list[TaskDef] = []
        self.memory: dict[str, list[int]] = {}  # task -> indices of the router's samples
        self.stream_tasks: list[TaskDef] = []
        self.seed = 0

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        freeze_all(model)
        o = self.options
        self.check_labels(run)
        self.layers = attach_adapters(model, language_linear_names(model),
                                      lambda name, linear: TaskExperts(linear.in_features, linear.out_features,
                                                                       o.rank, o.alpha, self.routing))
        self.model, self.seed, self.stream_tasks = model, run.seed, list(run.stream.tasks)
        self.grow(ROUTER)
        return model

    def check_labels(self, run: RunContext) -> None:
        """One label per task, each a token of its own, or the router could not say it."""
        count = len(run.stream.tasks)
        if self.options.labels == "letters" and count > len(LETTERS):
            raise ConfigError(f"method 'mrlora': letters label at most {len(LETTERS)} experts and this stream "
                              f"has {count} tasks; pass --option labels=digits")
        tokenizer = run.collator.tokenizer if run.collator is not None else None
        if tokenizer is None:
            return
        labels = expert_labels(count, self.options.labels)
        unknown = [label for label in labels
                   if tokenizer.unk_token_id in tokenizer(label, add_special_tokens=False).input_ids]
        if unknown:
            other = "digits" if self.options.labels == "letters" else "letters"
            raise ConfigError(f"method 'mrlora': the model's tokenizer does not know the expert labels "
                              f"{', '.join(unknown)} this stream of {len(labels)} tasks needs; "
                              f"pass --option labels={other} or use a model whose tokenizer knows them")

    def grow(self, owner: int) -> None:
        generator = torch.Generator().manual_seed(self.seed * 1000 + (owner if owner >= 0 else 999))
        device = next(self.model.parameters()).device
        for layer in self.layers.values():
            layer.add_expert(owner, generator, device)

    def experts_of(self, owner: int) -> list[nn.Parameter]:
        return [p for layer in self.layers.values() for p in (layer.lora_A[layer.owners.index(owner)],
                                                             layer.lora_B[layer.owners.index(owner)])]

    # ------------------------------------------------------------------ training the experts
    def before_task(self, stage: Stage, run: RunContext) -> None:
        task = stage.index - 1
        while len(self.tasks) <= task:
            self.tasks.append(run.stream.tasks[len(self.tasks)])
            self.grow(len(self.tasks) - 1)
        freeze_all(self.model)
        for parameter in self.experts_of(task):
            parameter.requires_grad_(True)
        self.routing.training_task, self.routing.task_ids = task, None

    def after_task(self, stage: Stage, run: RunContext) -> None:
        for task in stage.tasks:
            size = len(run.train_data[task.name])
            generator = torch.Generator().manual_seed(run.seed * 1000 + stage.index)
            kept = torch.randperm(size, generator=generator)[: self.options.router_samples]
            self.memory[task.name] = sorted(kept.tolist())
        self.train_router(run)

    # ------------------------------------------------------------------ the router
    def router_rows(self, run: RunContext) -> list[dict[str, Any]]:
        labels = expert_labels(len(self.tasks), self.options.labels)
        rows = []
        for position, task in enumerate(self.tasks):
            for row in rows_of(run.train_data[task.name], self.memory.get(task.name, [])):
                rows.append({"image": row["image"], "target": labels[position],
                             "instruction": routing_prompt(row["instruction"], self.tasks, labels)})
        return rows

    def train_router(self, run: RunContext) -> None:
        """The router's LoRA from a fresh start on the stored samples of every task so far: AdamW, 3%
        warm-up then cosine, as the router script trains it (``0_train_router.sh``)."""
        o = self.options
        generator = torch.Generator().manual_seed(run.seed * 1000 + 999)
        for layer in self.layers.values():
            index = layer.owners.index(ROUTER)
            with torch.no_grad():
                layer.lora_A[index].copy_(kaiming_down(layer.rank, layer.d_in, generator))
                layer.lora_B[index].zero_()
        rows = self.router_rows(run)
        parameters = self.experts_of(ROUTER)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        for parameter in trainable:
            parameter.requires_grad_(False)
        for parameter in parameters:
            parameter.requires_grad_(True)
        steps = o.router_epochs * math.ceil(len(rows) / o.router_batch_size)
        warmup = max(1, math.ceil(0.03 * steps))
        optimizer = torch.optim.AdamW(parameters, lr=o.router_lr, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(
            (step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * max(0, step - warmup) / max(1, steps - warmup)))))
        self.routing.training_task, self.routing.task_ids = ROUTER, None
        was_training = self.model.training
        self.model.train()
        try:
            for _ in range(o.router_epochs):
                order = torch.randperm(len(rows), generator=generator).tolist()
                for start in range(0, len(rows), o.router_batch_size):
                    batch = training_batch(run, [rows[i] for i in order[start:start + o.router_batch_size]])
                    self.model(**batch).loss.backward()
                    optimizer.step()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
        finally:
            self.model.train(was_training)
            for parameter in parameters:
                parameter.requires_grad_(False)
            for parameter in trainable:
                parameter.requires_grad_(True)

    def routes_by_choice_alone(self) -> bool:
        return True

    def route(self, batch: dict[str, torch.Tensor], run: RunContext, oracle: torch.Tensor | None = None,
              samples: list[dict[str, Any]] | None = None) -> torch.Tensor | None:
        if not self.tasks:
            return None
        if oracle is not None:
            chosen = oracle.to(run.device)
        else:
            chosen = torch.tensor(self.ask_router(samples, run), dtype=torch.long, device=run.device)
        self.routing.task_ids = chosen
        return chosen

    @torch.no_grad()
    def ask_router(self, samples: list[dict[str, Any]], run: RunContext) -> list[int]:
        """The router LoRA's answer to each sample's routing question, read as an expert."""
        labels = expert_labels(len(self.tasks), self.options.labels)
        questions = [{"image": s["image"], "instruction": routing_prompt(s["instruction"], self.tasks, labels)}
                     for s in samples]
        batch = {k: v.to(run.device) for k, v in run.collator.generation_batch(questions).items()}
        self.routing.task_ids = torch.full((len(samples),), ROUTER, dtype=torch.long, device=run.device)
        tokenizer = run.collator.tokenizer
        output = self.model.generate(**batch, max_new_tokens=self.options.router_max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        answers = tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return [chosen_expert(answer, labels, self.fallback(sample)) for answer, sample in zip(answers, samples)]

    def fallback(self, sample: dict[str, Any]) -> int:
        """The expert an illegal router output gets: random in the official code, here a fixed draw
        from the seed and the question."""
        return zlib.crc32(f"{self.seed}:{sample['instruction']}".encode()) % len(self.tasks)

    # ------------------------------------------------------------------ state
    def kept_samples(self) -> dict[str, list[int]]:
        return self.memory

    def state_dict(self) -> dict[str, Any]:
        """The tasks, the router's memory and the router's LoRA (trained outside the stages, so not among
        the weights the checkpoint keeps)."""
        state: dict[str, Any] = {"tasks": [task.name for task in self.tasks], "memory": self.memory}
        for name, layer in self.layers.items():
            index = layer.owners.index(ROUTER)
            state[f"router_A.{name}"], state[f"router_B.{name}"] = layer.lora_A[index], layer.lora_B[index]
        return state

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        by_name = {task.name: task for task in self.stream_tasks}
        self.tasks = [by_name[name] for name in state["tasks"]]
        for position in range(len(self.tasks)):
            self.grow(position)  # shapes only: the weights are loaded next
        self.memory = {name: list(kept) for name, kept in state["memory"].items()}
        with torch.no_grad():
            for name, layer in self.layers.items():
                index = layer.owners.index(ROUTER)
                layer.lora_A[index].copy_(state[f"router_A.{name}"])
                layer.lora_B[index].copy_(state[f"router_B.{name}"])
