"""Name -> builder registries; a miss raises with the available names and close matches."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from makd.errors import MakdError

T = TypeVar("T")


class UnknownNameError(MakdError, KeyError):
    """A name asked of a registry does not exist; the message lists close matches and what exists."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A case-insensitive mapping from a name to a builder, filled with the `register` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            for name in names:
                key = name.lower()
                if key in self._entries:
                    raise KeyError(f"{self.kind} {name!r} is registered twice")
                self._entries[key] = obj
            return obj

        return add

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self):
        """The names in the order they were registered (lower-cased)."""
        return iter(self._entries)

    def get(self, name: str) -> T:
        key = name.lower()
        if key in self._entries:
            return self._entries[key]
        raise UnknownNameError(unknown_name_message(self.kind, name, self.names()))


def unknown_name_message(kind: str, name: str, available: list[str]) -> str:
    """One line: the bad name, close matches ("did you mean") and what exists."""
    close = difflib.get_close_matches(name.lower(), [a.lower() for a in available], n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(available[:40]) + (" ..." if len(available) > 40 else "")
    return f"unknown {kind} {name!r}{hint} (available: {listing})"
