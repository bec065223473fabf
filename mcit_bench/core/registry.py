"""One generic registry for methods, metrics, sequences and models, with "did you mean" errors."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from mcit_bench.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind.

    Entries come from the modules of ``builtin_package`` (every module in it registers itself on
    import) and from third-party packages through the entry-point group ``mcit_bench.<kind>s``; both
    are loaded the first time the registry is read, never at import time.
    """

    def __init__(self, kind: str, builtin_package: str | None = None) -> None:
        self.kind = kind
        self._builtin_package = builtin_package
        self._entries: dict[str, T] = {}
        self._plugins_loaded = False

    def add(self, name: str, entry: T) -> T:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        if self._builtin_package:
            package = importlib.import_module(self._builtin_package)
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{self._builtin_package}.{module.name}")
        for point in entry_points(group=f"mcit_bench.{self.kind}s"):
            point.load()  # the plugin module registers itself on import

    def declared_names(self) -> list[str]:
        """The names registered, without importing a plugin (which may load torch): each module of the
        built-in package registers the entry named as the module, each entry point the entry of its
        name (tests/unit/test_architecture.py holds the built-in ones to it)."""
        names = set(self._entries)
        if self._builtin_package:
            spec = importlib.util.find_spec(self._builtin_package)
            if spec is not None and spec.submodule_search_locations:
                names.update(module.name for module in pkgutil.iter_modules(spec.submodule_search_locations))
        names.update(point.name for point in entry_points(group=f"mcit_bench.{self.kind}s"))
        return sorted(names)

    def get(self, name: str) -> T:
        self._load_plugins()
        if name not in self._entries:
            raise ConfigError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown {self.kind} {name!r}: {hint}known {self.kind}s are {', '.join(self.names())}"

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
