"""One registry of losses by name: ``@register(...)`` on the function, ``get(name)`` to use it.

A registered loss is a pure function ``loss_fn(batch: LossBatch, cfg: Config) -> (loss, metrics)``
with a typed, validated config dataclass. Nothing in the code base branches on a loss name.

Each registration also DECLARES, as functions of the loss's config (typed outputs):

* ``outputs(cfg) -> LossOutputs``: which metrics are micro-batch contributions to a globally
  normalised total, summed over micro-batches and data-parallel ranks (``loss/total``,
  ``loss/<name>``, the KL terms); every other metric is averaged. And which metric is the loss's
  trust-region KL(pi_old || pi_theta), the input of the adaptive KL controller (None where the
  loss has none: GRPO's ``kl/ref_k3`` is a KL to the reference, not a trust region).
* ``needs_reference(cfg) -> bool``: whether the batch must carry reference-policy logprobs
  (``ref_logprobs``); the trainer computes them only then, and a config that provides no
  reference for such a loss is rejected before any model is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch

from nemo_rence.algorithm.losses.batch import LossBatch

__all__ = [
    "LossFn",
    "LossOutputs",
    "LossSpec",
    "UnknownLossError",
    "available",
    "get",
    "register",
]

C = TypeVar("C")
Metrics = dict[str, float | torch.Tensor]
LossFn = Callable[[LossBatch, C], tuple[torch.Tensor, Metrics]]


class UnknownLossError(KeyError, ValueError):
    """Raised by :func:`get` for a name that is not registered; the message lists the names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class LossOutputs:
    """How a loss's metrics reduce over micro-batches, and which one is its trust-region KL.

    Attributes:
        summed: metric names that are micro-batch contributions to a globally normalised total
            (``sum over groups or tokens / global normaliser``, see ``batch.py``): summed over
            micro-batches and data-parallel ranks. Every other metric is averaged.
        trust_region_kl: the metric holding KL(pi_old || pi_theta) of the update (fed to the
            adaptive KL controller), or None when the loss has no such term.
    """

    summed: frozenset[str]
    trust_region_kl: str | None = None

    def __post_init__(self) -> None:
        if self.trust_region_kl is not None and self.trust_region_kl not in self.summed:
            raise ValueError(
                f"trust_region_kl {self.trust_region_kl!r} must be one of the summed metrics"
            )

    def reduction(self, key: str) -> str:
        """'sum' or 'mean' for the metric ``key``."""
        return "sum" if key in self.summed else "mean"


def _no_reference(cfg: Any) -> bool:
    return False


@dataclass(frozen=True)
class LossSpec(Generic[C]):
    """A registered loss: the function, its config class, where its formula comes from, and its
    declarations (module docstring)."""

    name: str
    fn: LossFn[C]
    config_cls: type[C]
    paper: str
    equation: str
    outputs_of: Callable[[C], LossOutputs]
    needs_reference_of: Callable[[C], bool] = _no_reference

    def outputs(self, cfg: C | None = None) -> LossOutputs:
        """The metric reductions and the trust-region KL key for ``cfg`` (default config)."""
        return self.outputs_of(cfg if cfg is not None else self.config_cls())

    def needs_reference(self, cfg: C | None = None) -> bool:
        """Whether the loss with ``cfg`` reads ``ref_logprobs`` (a reference policy)."""
        return self.needs_reference_of(cfg if cfg is not None else self.config_cls())

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
    name: str,
    *,
    config: type[C],
    paper: str,
    equation: str,
    outputs: Callable[[C], LossOutputs] | None = None,
    needs_reference: Callable[[C], bool] = _no_reference,
) -> Callable[[LossFn[C]], LossFn[C]]:
    """Decorator registering ``fn`` under ``name`` with its config class, citation and
    declarations. ``outputs`` defaults to ``loss/total`` and ``loss/<name>`` summed, no
    trust-region KL; ``needs_reference`` to never."""
    outputs_of = outputs or (lambda cfg: LossOutputs(frozenset({"loss/total", f"loss/{name}"})))

    def deco(fn: LossFn[C]) -> LossFn[C]:
        if name in _REGISTRY:
            raise ValueError(f"loss {name!r} is already registered")
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"config of loss {name!r} must be a dataclass, got {config!r}")
        _REGISTRY[name] = LossSpec(name, fn, config, paper, equation, outputs_of, needs_reference)
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
