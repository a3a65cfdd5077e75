"""One registry of losses by name: ``@register(...)`` on the function, ``get(name)`` to use it.

A registered loss is a pure function ``loss_fn(batch: LossBatch, cfg: Config) -> (loss, metrics)``
with a typed, validated config dataclass. Nothing in the code base branches on a loss name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch

from nemo_rence.algorithm.losses.batch import LossBatch

__all__ = ["LossFn", "LossSpec", "UnknownLossError", "available", "get", "register"]

C = TypeVar("C")
Metrics = dict[str, float | torch.Tensor]
LossFn = Callable[[LossBatch, C], tuple[torch.Tensor, Metrics]]


class UnknownLossError(KeyError, ValueError):
    """Raised by :func:`get` for a name that is not registered; the message lists the names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class LossSpec(Generic[C]):
    """A registered loss: the function, its config class and where its formula comes from."""

    name: str
    fn: LossFn[C]
    config_cls: type[C]
    paper: str
    equation: str

    @property
    def doc(self) -> str:
        return self.fn.__doc__ or ""

    def build_config(self, fields: Mapping[str, Any] | None = None) -> C:
        """Build the typed config from a plain mapping (e.g. a YAML preset); unknown keys fail."""
        fields = dict(fields or {})
        allowed = {f.name for f in dataclasses.fields(self.config_cls)}  # type: ignore[arg-type]
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise ValueError(
                f"unknown config field(s) {unknown} for loss {self.name!r}; "
                f"allowed fields: {sorted(allowed)}"
            )
        return self.config_cls(**fields)

    def __call__(self, batch: LossBatch, cfg: C | None = None) -> tuple[torch.Tensor, Metrics]:
        return self.fn(batch, cfg if cfg is not None else self.config_cls())


_REGISTRY: dict[str, LossSpec[Any]] = {}


def register(
    name: str, *, config: type[C], paper: str, equation: str
) -> Callable[[LossFn[C]], LossFn[C]]:
    """Decorator registering ``fn`` under ``name`` with its config class and citation."""

    def deco(fn: LossFn[C]) -> LossFn[C]:
        if name in _REGISTRY:
            raise ValueError(f"loss {name!r} is already registered")
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"config of loss {name!r} must be a dataclass, got {config!r}")
        _REGISTRY[name] = LossSpec(name, fn, config, paper, equation)
        return fn

    return deco


def get(name: str) -> LossSpec[Any]:
    """The loss registered as ``name``; raises :class:`UnknownLossError` listing the names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownLossError(
            f"unknown loss {name!r}; supported losses: {', '.join(available())}"
        ) from None


def available() -> list[str]:
    """Registered loss names, sorted."""
    return sorted(_REGISTRY)
