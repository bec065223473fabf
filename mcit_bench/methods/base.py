"""The method plug-in interface: a continual-learning method answers a few questions from the loop.

The loop owns the optimiser, the backward pass, the schedule, checkpoints and evaluation. A method
only chooses what trains, what data a stage sees, which extra loss terms apply and how to route at
inference; it returns values and never reaches into the loop's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from mcit_bench.methods.registry import METHODS
from mcit_bench.methods.search import LR, SearchSpace

if TYPE_CHECKING:
    import datasets

    from mcit_bench.data.stream import TaskDef, TaskStream
    from mcit_bench.models.collate import InstructionCollator
    from mcit_bench.models.guide import GuideEncoder


class MethodOptions(BaseModel):
    """Typed hyper-parameters of a method; unknown keys are refused when the config is read."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # boolean options the command line also takes as flags (``full``: ``--full``)
    flags: ClassVar[tuple[str, ...]] = ()

    def trains_base_weights(self) -> bool:
        """Whether these options train the loaded model's own weights (full fine-tuning), which a run
        that shards the frozen base (``--shard fsdp``) cannot hold."""
        return False


@dataclass(frozen=True)
class Capabilities:
    """What a method needs and does, declared so the harness can check it honestly."""

    task_id_at_eval: bool = False  # does evaluation need to be told the task?
    grows_params: bool = False  # does it add parameters as tasks arrive?
    uses_memory: bool = False  # does it keep samples of past tasks?
    upper_bound: bool = False  # a reference point, not a continual method (joint training)
    can_shard: bool = True  # does it run with the frozen base sharded (--shard fsdp)?
    # does it choose each evaluation sample's task itself (reported: task-selection accuracy, oracle matrix)?
    selects_task: bool = False
    # does it read a guidance encoder's image and instruction features (RunContext.guide)?
    needs_guide: bool = False

    def summary(self) -> str:
        """What ``mcit-bench ls methods`` prints: each capability that holds, in words."""
        words = [("needs the task id at evaluation", self.task_id_at_eval), ("selects the task", self.selects_task),
                 ("grows parameters", self.grows_params), ("keeps past samples", self.uses_memory),
                 ("upper bound", self.upper_bound), ("reads a guide encoder", self.needs_guide),
                 ("shards", self.can_shard)]
        return ", ".join(word for word, holds in words if holds)


@dataclass(frozen=True)
class Stage:
    """One training stage: the tasks whose data it trains on (one task, or all for joint)."""

    index: int  # 1-based: row ``index`` of the accuracy matrix is measured after it
    tasks: tuple[TaskDef, ...]

    @property
    def name(self) -> str:
        return "+".join(task.name for task in self.tasks)


@dataclass
class RunContext:
    """What hooks may read: the stream, the data of every stage seen so far, the seed."""

    stream: TaskStream
    seed: int
    train_data: dict[str, datasets.Dataset] = field(default_factory=dict)
    device: torch.device = torch.device("cpu")
    collator: InstructionCollator | None = None  # turns rows into model batches, for hooks that run the model
    guide: GuideEncoder | None = None  # the frozen CLIP of a method that reads one (capabilities.needs_guide)


class Method:
    """Base class: sequential fine-tuning behaviour with every hook a no-op."""

    name: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    # what ``mcit-bench tune`` varies (mcit_bench.methods.search); a method declares its own
    search_space: ClassVar[SearchSpace] = LR
    # the option that trades the new task's accuracy for the old tasks' (a penalty's weight), if the
    # method has one: what ``tune --protocol plasticity`` decays from the top of its search range
    stability: ClassVar[str | None] = None

    def __init__(self, options: MethodOptions) -> None:
        self.options = options

    def stages(self, stream: TaskStream) -> list[Stage]:
        """One stage per task, in stream order."""
        return [Stage(index + 1, (task,)) for index, task in enumerate(stream.tasks)]

    def setup(self, model: nn.Module, run: RunContext) -> nn.Module:
        """Wrap the model (inject adapters) and choose the trainable parameters."""
        return model

    def before_task(self, stage: Stage, run: RunContext) -> None:
        """Grow, freeze or snapshot before a stage trains."""

    def train_data(self, stage: Stage, run: RunContext) -> datasets.Dataset:
        """The data a stage trains on; the default is its own tasks' training data."""
        import datasets

        parts = [run.train_data[task.name] for task in stage.tasks]
        return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)

    def before_step(self, batch: dict[str, torch.Tensor], run: RunContext,
                    samples: list[dict[str, Any]] | None = None) -> None:
        """See a training batch before its forward pass (D-MoLE routes it to past tasks' experts).
        ``samples`` are its rows (image, instruction and answer), for a method that reads them beside the
        model's inputs (SMoLoRA's instruction embedding)."""

    def loss(self, batch: dict[str, torch.Tensor], outputs: Any, run: RunContext) -> dict[str, torch.Tensor]:
        """Extra loss terms; the loop adds them to the language-modelling loss."""
        return {}

    def after_task(self, stage: Stage, run: RunContext) -> None:
        """Consolidate after a stage: Fisher information, keys, buffers, freezing."""

    def route(self, batch: dict[str, torch.Tensor], run: RunContext, oracle: torch.Tensor | None = None,
              samples: list[dict[str, Any]] | None = None) -> torch.Tensor | None:
        """Choose a route for each sample of an evaluation batch, without its task label.

        Methods that select a task return each sample's chosen task (its position in the stream),
        from which the harness reports task-selection accuracy; the others return None. Given
        ``oracle`` (each sample's true task), a selecting method routes there instead of choosing:
        the oracle evaluation beside the routed one. ``samples`` are the batch's rows as the model
        sees them (image and instruction, no answer), for a method whose routing asks the model a
        question of its own (MR-LoRA).
        """
        return None

    def routes_by_choice_alone(self) -> bool:
        """Whether a selecting method routes each sample by its chosen task alone (no mixture of tasks,
        nothing the rest of its batch decides): then where the choice is the true task the oracle's route is
        the routed one, and so is its answer, which the harness reuses instead of generating it again."""
        return False

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimiser parameter groups; the default is every parameter that requires grad."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def kept_samples(self) -> dict[str, list[int]]:
        """The training samples of past tasks the method keeps (per task, their indices in its
        training split): a replay buffer, a router's memory. What ``uses_memory`` declares."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything carried between stages besides model weights (tensors and JSON values)."""
        return {}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Restore :meth:`state_dict`, regrowing any structure it describes before weights load."""

    def after_load(self, model: nn.Module) -> None:
        """After a checkpoint's weights are loaded: rebuild what the method derives from them."""


def register_method(name: str):
    """Class decorator: register a method under ``name``."""

    def decorate(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.add(name, cls)

    return decorate


def training_batch(run: RunContext, rows: list[dict]) -> dict[str, torch.Tensor]:
    """Rows made into a training batch (the loop's collator) on the run's device: how a hook that runs
    the model on training data (a Fisher, a proxy, a subspace) builds its batches."""
    return {key: value.to(run.device) for key, value in run.collator.train_batch(rows).items()}


def rows_of(dataset, indices: list[int]) -> list[dict]:
    """Rows of a ``datasets.Dataset`` (or a list of rows) by index, read column-wise in one go: how a
    method reads its training data (``RunContext.train_data``), as the training loop does."""
    if isinstance(dataset, list):
        return [dataset[i] for i in indices]
    columns = dataset[indices]
    return [dict(zip(columns, values)) for values in zip(*columns.values())]
