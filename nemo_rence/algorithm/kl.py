"""KL estimators (Schulman 2020) and KL-coefficient controllers (Ziegler et al. 2019).

Estimators. Tokens x are SAMPLED FROM q; given per-token log q(x) and log p(x) they estimate
KL(q || p) = E_{x~q}[log q(x) - log p(x)] token by token, with r = p(x) / q(x):

    k1 = -log r                    unbiased, high variance, can be negative
    k2 = (log r)^2 / 2             biased (low bias when p ~ q), always >= 0
    k3 = (r - 1) - log r           unbiased, always >= 0, low variance

For ReNCE's trust region the rollouts come from pi_old, so q = pi_old, p = pi_theta and
KL(pi_old || pi_theta) is estimated by k3 = exp(lp_theta - lp_old) - (lp_theta - lp_old) - 1.
For GRPO's KL(pi_theta || pi_ref) the (nearly on-policy) samples stand for pi_theta: q = pi_theta,
p = pi_ref, k3 = exp(lp_ref - lp_theta) - (lp_ref - lp_theta) - 1 (DeepSeekMath eq. 4).

Controllers give the coefficient lambda of the KL term; ``update(current_kl, n_steps)`` is called
once per iteration with the measured KL and the number of samples (Ziegler et al.'s n_steps).
Shapes: estimators are elementwise, any shape ([N, T] per-token logprobs in practice).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "KLController",
    "available_controllers",
    "available_estimators",
    "build_controller",
    "get_estimator",
    "k1",
    "k2",
    "k3",
]


LOG_RATIO_CLAMP = 20.0
"""Upper clamp of k3's log-ratio before ``expm1`` (see :func:`k3`)."""


def k1(logp_q: Tensor, logp_p: Tensor) -> Tensor:
    """k1 = log q(x) - log p(x), x ~ q: unbiased estimate of KL(q || p) (Schulman 2020).

    Args:
        logp_q: log-probabilities of the samples under the sampling distribution q, any shape.
        logp_p: log-probabilities of the same samples under p, same shape.
    """
    return logp_q - logp_p


def k2(logp_q: Tensor, logp_p: Tensor) -> Tensor:
    """k2 = (log p(x) - log q(x))^2 / 2, x ~ q: biased, non-negative (Schulman 2020).

    Args:
        logp_q: log-probabilities under the sampling distribution q, any shape.
        logp_p: log-probabilities under p, same shape.
    """
    return 0.5 * (logp_p - logp_q) ** 2


def k3(logp_q: Tensor, logp_p: Tensor) -> Tensor:
    """k3 = (r - 1) - log r with r = p(x)/q(x), x ~ q: unbiased and >= 0 (Schulman 2020).

    Computed as ``expm1(d) - d`` with d = min(log r, 20), which is exact for small d and never
    negative. The clamp (verl clamps log-ratios to +-20 likewise) keeps fp32 finite: e^d overflows
    from d ~ 88.7, and a single token with log-ratio 99 would make the loss inf and its gradient
    NaN; below 20 (a ratio of 4.9e8) the value is Schulman's exactly.

    Args:
        logp_q: log-probabilities under the sampling distribution q, any shape.
        logp_p: log-probabilities under p, same shape.
    """
    d = (logp_p - logp_q).clamp(max=LOG_RATIO_CLAMP)
    return torch.expm1(d) - d


_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"k1": k1, "k2": k2, "k3": k3}


def get_estimator(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The estimator ``k1``, ``k2`` or ``k3``; unknown names raise listing the choices."""
    try:
        return _ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown KL estimator {name!r}; supported: {', '.join(sorted(_ESTIMATORS))}"
        ) from None


def available_estimators() -> list[str]:
    return sorted(_ESTIMATORS)


class KLController(abc.ABC):
    """Base of the KL-coefficient controllers: ``value`` is lambda, ``update`` moves it."""

    value: float

    @abc.abstractmethod
    def update(self, current_kl: float, n_steps: int) -> float:
        """Take the measured KL of an iteration over ``n_steps`` samples; return the new value."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


@dataclass
class FixedKLController(KLController):
    """A constant coefficient: ``update`` leaves it unchanged.

    Attributes:
        value: the KL coefficient (>= 0).
    """

    value: float = 0.0

    def __post_init__(self) -> None:
        if not (self.value >= 0 and math.isfinite(self.value)):
            raise ValueError(f"value must be a finite number >= 0, got {self.value}")

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


@dataclass
class AdaptiveKLController(KLController):
    """Proportional controller of Ziegler et al. 2019 (arXiv 1909.08593), Sec. 2.2.

    e = clip(KL / target - 1, -0.2, 0.2);  value <- value * (1 + e * n_steps / horizon).
    A non-finite KL (an iteration whose steps were skipped) leaves the value unchanged.
    ReNCE paper (Sec. 4.1) defaults: init 0.001, target 0.01, horizon 25600.

    Attributes:
        value: current coefficient (initialised to ``init``).
        target: target KL (> 0).
        horizon: horizon of the controller in samples (> 0).
        clip: bound on the proportional error (0.2 in the paper).
    """

    value: float = 0.001
    target: float = 0.01
    horizon: float = 25600.0
    clip: float = 0.2

    def __post_init__(self) -> None:
        if not (self.value >= 0 and math.isfinite(self.value)):
            raise ValueError(f"init/value must be a finite number >= 0, got {self.value}")
        if not self.target > 0:
            raise ValueError(f"target must be > 0, got {self.target}")
        if not self.horizon > 0:
            raise ValueError(f"horizon must be > 0, got {self.horizon}")
        if not self.clip > 0:
            raise ValueError(f"clip must be > 0, got {self.clip}")

    def update(self, current_kl: float, n_steps: int) -> float:
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        if not math.isfinite(float(current_kl)):  # a skipped (non-finite) update measures nothing
            return self.value
        error = min(max(float(current_kl) / self.target - 1.0, -self.clip), self.clip)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "target": self.target,
            "horizon": self.horizon,
            "clip": self.clip,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = float(state["horizon"])
        self.clip = float(state["clip"])


def _fixed(init: float = 0.0) -> KLController:
    return FixedKLController(value=init)


def _adaptive(
    init: float = 0.001, target: float = 0.01, horizon: float = 25600.0, clip: float = 0.2
) -> KLController:
    return AdaptiveKLController(value=init, target=target, horizon=horizon, clip=clip)


_CONTROLLERS: dict[str, Callable[..., KLController]] = {"fixed": _fixed, "adaptive": _adaptive}


def build_controller(name: str, **kwargs: Any) -> KLController:
    """Build a controller by name (``fixed``: init; ``adaptive``: init, target, horizon, clip)."""
    try:
        factory = _CONTROLLERS[name]
    except KeyError:
        raise ValueError(
            f"unknown KL controller {name!r}; supported: {', '.join(sorted(_CONTROLLERS))}"
        ) from None
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for KL controller {name!r}: {exc}") from None


def available_controllers() -> list[str]:
    return sorted(_CONTROLLERS)
