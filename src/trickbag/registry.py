"""Name -> builder registries with did-you-mean lookups (STYLE.md, convention 8).

One ``Registry`` per kind of thing (schedules, initializers, models). The CLI and the
recipes resolve names only through these, so an unknown name always gets the same
helpful error.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from trickbag._checks import did_you_mean

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T", bound=Callable)


class UnknownNameError(KeyError):
    """An unknown registry name; the message carries a did-you-mean hint."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A dict of builders keyed by name; ``register`` warns when a name is overwritten."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator adding a builder under one or more names (the first is canonical)."""

        def add(fn: T) -> T:
            for name in names:
                if name in self._items and self._items[name] is not fn:
                    warnings.warn(f"{self.kind} {name!r} is being overwritten", stacklevel=2)
                self._items[name] = fn
            return fn

        return add

    def get(self, name: str) -> T:
        """The builder registered as ``name``; ``UnknownNameError`` with a did-you-mean hint."""
        try:
            return self._items[name]
        except KeyError:
            hint = did_you_mean(name, self._items)
            raise UnknownNameError(f"unknown {self.kind} {name!r}{hint}; known: {', '.join(sorted(self._items))}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
