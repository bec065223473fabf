"""The registry of methods, apart from the Method class so that naming the registered methods
(``METHODS.declared_names()``: the leaderboard checking a submission) loads neither the plugins nor
torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcit_bench.core.registry import Registry

if TYPE_CHECKING:
    from mcit_bench.methods.base import Method

METHODS: Registry[type[Method]] = Registry("method", builtin_package="mcit_bench.baselines")
