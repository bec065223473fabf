"""A run's identity beyond its method and seed, as its results give it: the protocol it was evaluated
under, the settings it was given (``default``, ``tuned-`` or ``custom-`` and a digest) and the split it
was scored on. Leaderboard keys, plots and data frames all name runs by these."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from mcit_bench.config import RunConfig, TrainingConfig
from mcit_bench.results.document import Results

Protocol = Literal["task-aware", "task-agnostic", "upper-bound"]


def sequence_label(results: Results) -> str:
    """``name@version``, and ``:variant`` for an instruction variant: another stream of the same tasks."""
    sequence = results.run.sequence
    return f"{sequence.name}@{sequence.version}" + (f":{sequence.variant}" if sequence.variant else "")


def protocol_of(results: Results) -> Protocol:
    if results.run.upper_bound:
        return "upper-bound"
    return "task-aware" if results.run.task_id_at_eval else "task-agnostic"


def hand_set(config: RunConfig) -> dict[str, Any]:
    """The method options, per-stage options (the plasticity protocol's schedule) and training settings a
    run's config gives that are not the defaults."""
    recorded = config.as_json()
    defaults = TrainingConfig().model_dump(mode="json")
    training = {key: value for key, value in recorded["training"].items() if defaults.get(key) != value}
    options, stages = config.method_options, recorded.get("stage_options")
    return {**({"method_options": options} if options else {}), **({"stage_options": stages} if stages else {}),
            **({"training": training} if training else {})}


def _digest(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def tuned_key(params: dict[str, Any]) -> str:
    """The settings key of a run made with a study's chosen ``params`` (its tuning.json's best params)."""
    return f"tuned-{_digest(params)}"


def split_of(results: Results) -> Literal["test", "validation"]:
    """Whether a run was scored on test or on a validation split carved from its training data."""
    return "validation" if results.run.config.validation is not None else "test"


def settings_of(results: Results) -> str:
    """``default``; ``tuned-`` and the digest of the settings a tuning study chose; or ``custom-`` and
    the digest of the options and training settings given by hand."""
    tuned = results.run.config.tuned
    if tuned is not None:
        return tuned_key(dict(tuned.params))
    chosen = hand_set(results.run.config)
    return f"custom-{_digest(chosen)}" if chosen else "default"


def settings_values_of(results: Results) -> dict[str, Any] | None:
    """The values ``settings_of`` digests: a study's chosen parameters, or the hand-set options and
    training settings; None for ``default``."""
    tuned = results.run.config.tuned
    if tuned is not None:
        return dict(tuned.params)
    return hand_set(results.run.config) or None
