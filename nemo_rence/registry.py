"""Named backends chosen by a config string: one registry per kind, one error for a bad name.

Example::

    ENGINES: Registry[EngineBuilder] = Registry("rollout.engine")

    @ENGINES.register("hf")
    def _hf(...): ...

    ENGINES.get("hf")          # the builder
    ENGINES.get("sglang")      # UnknownNameError: rollout.engine must be one of ['hf', ...]

Nothing branches on these strings elsewhere: a new backend is one decorated function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name no backend is registered under; the message names the field and the choices."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Backends of one kind by name; ``field`` is the config field that chooses one."""

    def __init__(self, field: str) -> None:
        self.field = field
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``item`` under ``name`` (a name is registered once)."""

        def deco(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.field} {name!r} is already registered")
            self._items[name] = item
            return item

        return deco

    def get(self, name: str) -> T:
        """The backend registered as ``name``; raises :class:`UnknownNameError`."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"{self.field} must be one of {self.names()}, got {name!r}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
