"""Experience replay (replay): a buffer of past training samples mixed into each later task's data.

Modes: ``ratio`` keeps a share of every past task (default 0.01, the setting of He et al. 2023);
``balanced`` keeps a fixed total split evenly over the past tasks; ``reservoir`` keeps a fixed total
by reservoir sampling over the stream. The buffer's samples are concatenated with the new task's
data and shuffled with it by the loop. The buffer holds sample indices, so it is exact and small.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from mcit_bench.methods.base import Capabilities, Method, RunContext, Stage, register_method
from mcit_bench.methods.lora import LORA_SPACE, SeqFTOptions, lora_or_full


class ReplayOptions(SeqFTOptions):
    mode: Literal["ratio", "balanced", "reservoir"] = "ratio"
    ratio: float = Field(default=0.01, gt=0.0, le=1.0)  # mode ratio: share of each past task kept
    buffer_size: int = Field(default=200, gt=0)  # modes balanced and reservoir: total samples kept


@register_method("replay")
class Replay(Method):
    capabilities = Capabilities(uses_memory=True)
    Options = ReplayOptions
    # the memory is the protocol's budget, the same for every entry, so it is never tuned
    search_space = LORA_SPACE

    def __init__(self, options: ReplayOptions) -> None:
        super().__init__(options)
        self.buffer: dict[str, list[int]] = {}  # task -> indices into its training data
        self.seen = 0  # samples offered to the reservoir so far

    def setup(self, model, run: RunContext):
        return lora_or_full(model, self.options)

    def train_data(self, stage: Stage, run: RunContext):
        import datasets

        own = super().train_data(stage, run)
        past = [run.train_data[task].select(indices) for task, indices in self.buffer.items() if indices]
        return datasets.concatenate_datasets([own, *past]) if past else own

    def after_task(self, stage: Stage, run: RunContext) -> None:
        rng = np.random.default_rng([run.seed, stage.index])
        for task in stage.tasks:
            size = len(run.train_data[task.name])
            if self.options.mode == "ratio":
                keep = max(1, round(self.options.ratio * size))
                self.buffer[task.name] = sorted(rng.choice(size, size=min(keep, size), replace=False).tolist())
            elif self.options.mode == "balanced":
                self.buffer[task.name] = sorted(rng.permutation(size).tolist())
                per_task = self.options.buffer_size // len(self.buffer)
                self.buffer = {name: kept[:per_task] for name, kept in self.buffer.items()}
            else:
                self.reservoir(task.name, size, rng)

    def reservoir(self, task: str, size: int, rng: np.random.Generator) -> None:
        """Offer the task's samples one by one; each of all samples seen is kept with equal chance."""
        slots = [(name, index) for name, kept in self.buffer.items() for index in kept]
        for index in range(size):
            self.seen += 1
            if len(slots) < self.options.buffer_size:
                slots.append((task, index))
            else:
                j = int(rng.integers(self.seen))
                if j < self.options.buffer_size:
                    slots[j] = (task, index)
        self.buffer = {}
        for name, index in slots:
            self.buffer.setdefault(name, []).append(index)

    def kept_samples(self) -> dict[str, list[int]]:
        return self.buffer

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer, "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any], model) -> None:
        self.buffer = {name: list(kept) for name, kept in state.get("buffer", {}).items()}
        self.seen = int(state.get("seen", 0))
