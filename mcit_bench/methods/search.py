"""Hyper-parameter search spaces: what ``mcit-bench tune`` may vary for a method.

Each method declares its space in its own file (``Method.search_space``), a mapping from a setting
to a range. A name ``training.<field>`` is a training setting (``training.lr``); any other name is
one of the method's options. Every method's space holds the learning rate and, where the method has
one, its adapter rank, so no method is tuned on more knobs than the question it answers needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import optuna

TRAINING_PREFIX = "training."


@dataclass(frozen=True)
class LogUniform:
    """A positive float drawn on a log scale (learning rates, penalty weights)."""

    low: float
    high: float

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=True)

    def values_to_check(self) -> tuple[Any, ...]:
        return (self.low, self.high)

    def to_json(self) -> dict[str, Any]:
        return {"log": [self.low, self.high]}


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high)

    def values_to_check(self) -> tuple[Any, ...]:
        return (self.low, self.high)

    def to_json(self) -> dict[str, Any]:
        return {"range": [self.low, self.high]}


@dataclass(frozen=True)
class Choice:
    """One of a few values (ranks, temperatures): each is tried as it is, never interpolated."""

    choices: tuple[Any, ...]

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def values_to_check(self) -> tuple[Any, ...]:
        return self.choices

    def to_json(self) -> dict[str, Any]:
        return {"choices": list(self.choices)}


SearchParam = Union[LogUniform, Uniform, Choice]
SearchSpace = dict[str, SearchParam]

# The learning rate of what trains (LoRA, experts); the default 1e-3 sits in the middle of the log range.
LR: SearchSpace = {"training.lr": LogUniform(1e-4, 1e-2)}


def parse_param(name: str, raw: Any, source: str) -> SearchParam:
    """One entry of a search-space file: ``{log: [low, high]}``, ``{range: [low, high]}`` or ``{choices: [...]}``."""
    from mcit_bench.core.errors import ConfigError

    usage = (f"{source}: {name} must be {{log: [low, high]}}, {{range: [low, high]}} or {{choices: [a, b, ...]}}")
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ConfigError(usage)
    (kind, value), = raw.items()
    if kind == "choices":
        if not isinstance(value, list) or not value:
            raise ConfigError(usage)
        return Choice(tuple(value))
    if kind not in ("log", "range") or not isinstance(value, list) or len(value) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ConfigError(usage)
    low, high = float(value[0]), float(value[1])
    if not low < high or (kind == "log" and low <= 0):
        raise ConfigError(f"{source}: {name} needs low < high{' and low > 0 on a log scale' * (kind == 'log')} "
                          f"(got {value})")
    return LogUniform(low, high) if kind == "log" else Uniform(low, high)


def space_to_json(space: SearchSpace) -> dict[str, Any]:
    return {name: param.to_json() for name, param in sorted(space.items())}
