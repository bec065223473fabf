"""The registry of methods, apart from the Method class so that naming the registered methods
(``METHODS.declared_names()``: the leaderboard checking a submission) loads neither the plugins nor
torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcit_bench.core.errors import ConfigError, first_problem
from mcit_bench.core.registry import Registry

if TYPE_CHECKING:
    from mcit_bench.config import RunConfig
    from mcit_bench.methods.base import Method

METHODS: Registry[type[Method]] = Registry("method", builtin_package="mcit_bench.baselines")


def build_method(config: RunConfig) -> Method:
    """The registered method with its typed options; a wrong option, or a wrong option of one stage
    (``stage_options``), is named before anything runs."""
    method = METHODS.get(config.method)(stage_method_options(config, None))
    for stage in sorted(config.stage_options or {}):
        stage_method_options(config, stage)
    return method


def stage_method_options(config: RunConfig, stage: int | None):
    """The method's options for ``stage`` (its ``stage_options`` over the run's), or the run's (None)."""
    from pydantic import ValidationError

    method_cls = METHODS.get(config.method)
    override = (config.stage_options or {}).get(stage, {}) if stage is not None else {}
    where = "option" if stage is None or stage not in (config.stage_options or {}) else f"stage {stage} option"
    try:
        return method_cls.Options.model_validate({**config.method_options, **override})
    except ValidationError as error:
        field, message = first_problem(error)
        raise ConfigError(f"method {config.method!r} {where} {field}: {message}") from None
