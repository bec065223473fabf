"""Versioned files (results documents, leaderboards): the version this mcit-bench reads, and the
steps that convert an older one. An older file is never read as if it were current: it is refused
with one sentence naming ``mcit-bench convert``, which applies the steps and writes the file back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mcit_bench.core.errors import DataError

Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class FileVersion:
    """``field`` holds the version; ``upgrades[v]`` turns a version ``v`` file into version ``v + 1``."""

    field: str
    current: int
    upgrades: dict[int, Upgrade] = field(default_factory=dict)

    def found(self, data: Any) -> Any:
        """The file's version: an integer, or None when it holds none (or something else there, which
        no version of mcit-bench wrote)."""
        value = data.get(self.field) if isinstance(data, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def require_current(self, data: Any, path: str, what: str = "") -> None:
        """Refuse a file of another version, naming what to do about it (``what``: how to call it)."""
        source = f"{what} {path}".strip()
        found = self.found(data)
        if found in self.upgrades:
            raise DataError(f"{source} has {self.field} {found}, which this mcit-bench no longer reads; convert it "
                            f"with 'mcit-bench convert {path}'")
        if isinstance(found, int) and found < self.current:
            raise DataError(f"{source} has {self.field} {found}, which this mcit-bench no longer reads nor "
                            f"converts; write it again with this version ({self.field} {self.current})")
        if found != self.current:
            raise DataError(f"{source} has {self.field} {found!r}; this mcit-bench reads version {self.current} "
                            f"(upgrade mcit-bench to read newer files)")

    def upgraded(self, data: Any, source: str) -> tuple[dict[str, Any], Any]:
        """The file converted to the current version, and the version it had."""
        found = self.found(data)
        if found not in self.upgrades and found != self.current:
            raise DataError(f"{source} has {self.field} {found!r}, which no version of mcit-bench wrote before "
                            f"{self.current}; it cannot be converted")
        while data[self.field] in self.upgrades:
            data = {**self.upgrades[data[self.field]](data), self.field: data[self.field] + 1}
        return data, found
