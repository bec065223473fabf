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
    """The registered method with its typed options (a wrong option is named before anything runs)."""
    from pydantic import ValidationError

    method_cls = METHODS.get(config.method)
    try:
        options = method_cls.Options.model_validate(config.method_options)
    except ValidationError as error:
        field, message = first_problem(error)
        raise ConfigError(f"method {config.method!r} option {field}: {message}") from None
    return method_cls(options)
