"""One generic name -> object registry, with lazy entries and helpful misses.

Heavy backends register as ``"module:attr"`` strings so that ``iaa-eval --help`` and
``iaa-eval tasks`` never import torch.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from iaa_eval.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (or to lazy ``"module:attr"`` references that resolve on first use)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T | str] = {}

    def add(self, name: str, target: T | str) -> None:
        """Register ``target`` under ``name``; a second, different target for a name is an error."""
        old = self._entries.get(name)
        if old is not None and old is not target and old != target:
            raise ValueError(f"{self.what} {name!r} is already registered to {old!r}; refusing "
                             f"{target!r}")
        self._entries[name] = target

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def decorate(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorate

    def require(self, name: str) -> None:
        """Check that ``name`` is known without importing it; unknown names raise with close
        matches."""
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UsageError(f"unknown {self.what} {name!r}.{hint} Available: "
                             f"{', '.join(sorted(self._entries))}")

    def get(self, name: str) -> T:
        """Resolve ``name`` (importing a lazy entry on first use)."""
        self.require(name)
        entry = self._entries[name]
        if isinstance(entry, str) and ":" in entry:
            module_name, attr = entry.split(":", 1)
            entry = getattr(importlib.import_module(module_name), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
