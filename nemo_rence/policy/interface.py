"""The ``Policy`` contract: the model being trained, as the loop sees it.

Shape legend::

    N  rollouts (rows) in the batch handed to this rank; the K rollouts of a prompt share a group id
    L  padded sequence length (prompt + response + right padding)
    T  response width: per-token tensors are response-aligned, column j = j-th response token
    n  rollouts in one micro-batch (whole groups only)

Padding contract (right padding, prompt first, response-aligned outputs). Worked example with
two rollouts of one prompt ``[11, 12]`` and one of a prompt ``[21]`` (pad id is irrelevant)::

    input_ids        = [[11, 12, 31, 32, 33],     # prompt 11 12, response 31 32 33
                        [11, 12, 41,  0,  0],     # prompt 11 12, response 41, 2 pad
                        [21, 51, 52,  0,  0]]     # prompt 21,    response 51 52, 2 pad
    prompt_lengths   = [2, 2, 1]
    response_lengths = [3, 1, 2]
    group_ids        = [0, 0, 1]
    -> T = max(response_lengths) = 3 (or ``response_width`` when given)
    -> response_mask = [[1, 1, 1],
                        [1, 0, 0],
                        [1, 1, 0]]
    -> logprobs(batch)[0] = [log p(31 | 11 12), log p(32 | 11 12 31), log p(33 | 11 12 31 32)]
       logprobs(batch)[1] = [log p(41 | 11 12), 0, 0]          # 0 in padding columns
       logprobs(batch)[2] = [log p(51 | 21), log p(52 | 21 51), 0]

Per-token extras (``old_logprobs``, ``ref_logprobs``) use the same ``[N, T]`` response-aligned
layout, so a rollout engine's sampled logprobs drop in unchanged. Per-rollout extras
(``rewards``) are ``[N]``. Every extra is sliced by rows with its micro-batch and handed to the
loss untouched.

Micro-batching and normalisation: a training step splits the batch into micro-batches of WHOLE
groups (listwise losses compare the K rollouts of a prompt with each other) and hands each to
``loss_fn(logprobs [n, T], micro_batch)`` together with the mini-batch's global normalisers
(``num_groups_global``, ``num_tokens_global``, counted over all data-parallel ranks). A loss of the
form ``sum over groups (or tokens) / global normaliser`` then makes the micro-batch losses sum to
the mini-batch loss, and the gradients accumulate to its gradient.

Data parallelism: each data-parallel rank passes its own share of whole groups; all ranks of one
tensor/pipeline-parallel model replica must pass the same batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from nemo_rence.algorithm.correction import (
    CorrectionConfig,
    correction_weights,
    reweight_gradient,
)

__all__ = [
    "AlgorithmLoss",
    "LossFn",
    "Metrics",
    "MicroBatch",
    "Policy",
    "PolicyBatch",
    "RowData",
    "algorithm_loss",
    "metric_reduction",
]

Metrics = dict[str, float]


@dataclass
class RowData:
    """Per-rollout tensors that travel with a batch to the loss, each with first dim N (rows).

    Attributes:
        rewards: [N] float32 r(x, y).
        old_logprobs: [N, T] log pi_old per response token (the score stage fills it).
        ref_logprobs: [N, T] log pi_ref, for a loss that declares it needs a reference.
        engine_logprobs: [N, T] the engine's sampling logprobs (0 on padding).
        engine_version: [N] int64 weight version of the engine that generated each rollout.
    """

    rewards: Tensor | None = None
    old_logprobs: Tensor | None = None
    ref_logprobs: Tensor | None = None
    engine_logprobs: Tensor | None = None
    engine_version: Tensor | None = None

    @classmethod
    def of(cls, value: RowData | Mapping[str, Tensor] | None) -> RowData:
        """A :class:`RowData` from itself, None, or a mapping of its field names (checked)."""
        if isinstance(value, RowData):
            return value
        value = dict(value or {})
        unknown = sorted(set(value) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown row data {unknown}; allowed: {cls.names()}")
        return cls(**value)

    @staticmethod
    def names() -> list[str]:
        return [f.name for f in fields(RowData)]

    def present(self) -> dict[str, Tensor]:
        """The tensors that are set, by field name."""
        return {n: v for n in self.names() if (v := getattr(self, n)) is not None}

    def select(self, rows: Tensor, device: torch.device | str | None = None) -> RowData:
        """These rows of every tensor (moved to ``device`` when given)."""
        return RowData(
            **{
                n: (v[rows] if device is None else v[rows].to(device))
                for n, v in self.present().items()
            }
        )

    def replace(self, **tensors: Tensor) -> RowData:
        """A copy with some tensors set."""
        return dataclasses.replace(self, **tensors)


@dataclass
class PolicyBatch:
    """Rollouts to score or train on (see the module docstring for the padding contract).

    Args:
        input_ids: [N, L] int64, prompt then response tokens, right-padded (pad id arbitrary).
        prompt_lengths: [N] int64, ``p_i >= 1`` prompt tokens at the start of row ``i``.
        response_lengths: [N] int64, ``r_i >= 0`` response tokens after the prompt,
            ``p_i + r_i <= L``.
        group_ids: [N] int64 prompt id; rollouts of one prompt share it (need not be contiguous).
        extras: the per-rollout tensors passed through to the loss (:class:`RowData`; a mapping
            of its field names is accepted and converted).
        response_width: T, columns of the per-token outputs; default ``max(response_lengths)``.
    """

    input_ids: Tensor
    prompt_lengths: Tensor
    response_lengths: Tensor
    group_ids: Tensor
    extras: RowData = field(default_factory=RowData)
    response_width: int | None = None

    def __post_init__(self) -> None:
        self.extras = RowData.of(self.extras)
        if self.input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [N, L], got {tuple(self.input_ids.shape)}")
        n, length = self.input_ids.shape
        for name in ("prompt_lengths", "response_lengths", "group_ids"):
            value = getattr(self, name)
            if tuple(value.shape) != (n,):
                raise ValueError(f"{name} must be [N]=[{n}], got {tuple(value.shape)}")
            if value.is_floating_point():
                raise ValueError(f"{name} must be an integer tensor, got {value.dtype}")
        if n and bool((self.prompt_lengths < 1).any()):
            raise ValueError("every row needs at least one prompt token (prompt_lengths >= 1)")
        if n and bool((self.response_lengths < 0).any()):
            raise ValueError("response_lengths must be >= 0")
        if n and int((self.prompt_lengths + self.response_lengths).max()) > length:
            raise ValueError(f"prompt_lengths + response_lengths exceeds L={length} in some row")
        if self.response_width is not None and n and self.response_width < self.max_response:
            raise ValueError(
                f"response_width={self.response_width} < longest response {self.max_response}"
            )
        for name, value in self.extras.present().items():
            if value.shape[:1] != (n,):
                raise ValueError(
                    f"extras[{name!r}] must have first dim N={n}, got {tuple(value.shape)}"
                )

    @property
    def size(self) -> int:
        """N, the number of rollouts."""
        return int(self.input_ids.shape[0])

    @property
    def max_response(self) -> int:
        return int(self.response_lengths.max()) if self.size else 0

    @property
    def width(self) -> int:
        """T, the response width of per-token outputs."""
        return self.response_width if self.response_width is not None else self.max_response

    @property
    def response_mask(self) -> Tensor:
        """[N, T] float 0/1: 1 on the response tokens of each row."""
        cols = torch.arange(self.width, device=self.response_lengths.device)
        return (cols[None, :] < self.response_lengths[:, None]).float()

    def num_tokens(self) -> int:
        """Response tokens in the batch, ``sum_i r_i``."""
        return int(self.response_lengths.sum())


@dataclass
class MicroBatch:
    """What ``loss_fn`` receives beside the logprobs: one micro-batch of whole groups.

    Args:
        rows: [n] int64 rows of the (per-rank) :class:`PolicyBatch` in this micro-batch.
        response_mask: [n, T] float 0/1.
        group_ids: [n] int64.
        extras: the batch's :class:`RowData` sliced to these rows (``[n, ...]``).
        num_groups_global: groups in the whole mini-batch, summed over data-parallel ranks.
        num_tokens_global: response tokens in the whole mini-batch, summed over DP ranks.
        num_micro_batches: micro-batches on this rank in this step.
    """

    rows: Tensor
    response_mask: Tensor
    group_ids: Tensor
    extras: RowData
    num_groups_global: int
    num_tokens_global: int
    num_micro_batches: int

    def __post_init__(self) -> None:
        self.extras = RowData.of(self.extras)


#: ``loss_fn(logprobs [n, T] (requires grad), micro_batch) -> (loss scalar, metrics)``.
LossFn = Callable[[Tensor, MicroBatch], tuple[Tensor, Mapping[str, Any]]]


@runtime_checkable
class Policy(Protocol):
    """A trainable policy pi_theta (Megatron-Core implementation: ``policy.megatron``)."""

    def logprobs(self, batch: PolicyBatch) -> Tensor:
        """Forward only: [N, T] float32 per-token log pi_theta of the response tokens (0 on padding)."""
        ...

    def train_step(self, batch: PolicyBatch, loss_fn: LossFn, lr: float | None = None) -> Metrics:
        """One optimizer step on ``batch`` (gradient accumulation over micro-batches of whole
        groups), at learning rate ``lr`` (``None``: the optimizer's current one)."""
        ...

    def export_weights(self) -> Iterator[tuple[str, Tensor]]:
        """Full (TP/PP-gathered) weights as Hugging Face (name, tensor) pairs, streamed one by one."""
        ...

    def save(self, directory: str | Path) -> None:
        """Write model and optimizer state to ``directory``."""
        ...

    def load(self, directory: str | Path) -> None:
        """Restore what :meth:`save` wrote."""
        ...


class AlgorithmLoss:
    """A registered ``nemo_rence.algorithm.losses`` loss adapted to the policy's ``LossFn``, with
    the loss's declarations (``LossSpec.outputs``) attached.

    The micro-batch must carry ``extras.old_logprobs`` [n, T] and ``extras.rewards`` [n]
    (and ``extras.ref_logprobs`` when ``needs_reference``); the global normalisers are
    forwarded so that micro-batch losses of whole groups sum to the mini-batch loss.

    With a rollout ``correction`` (``algorithm.correction``) other than 'none', the micro-batch
    must also carry ``extras.engine_logprobs`` [n, T] and the logprobs reach the loss through
    ``reweight_gradient`` with the mode's weights: loss values unchanged, gradients corrected.

    Attributes:
        name: the registered loss name.
        config: the loss's typed config.
        correction: the rollout mismatch correction (None: none).
        outputs: how each metric reduces over micro-batches and DP ranks, and the trust-region
            KL key (``LossOutputs``).
        needs_reference: whether the loss reads ``ref_logprobs``.
    """

    def __init__(
        self,
        name: str,
        cfg: Any = None,
        *,
        kl_coef: float = 0.0,
        progress: float = 0.0,
        generator: torch.Generator | None = None,
        correction: CorrectionConfig | None = None,
    ) -> None:
        from nemo_rence.algorithm import losses

        self.correction = correction if correction is not None and correction.enabled else None
        self.name = name
        self.spec = losses.get(name)
        is_plain = cfg is None or isinstance(cfg, Mapping)
        self.config = self.spec.build_config(cfg) if is_plain else cfg
        self.outputs = self.spec.outputs(self.config)
        self.needs_reference = self.spec.needs_reference(self.config)
        self.kl_coef = kl_coef
        self.progress = progress
        self.generator = generator

    @property
    def trust_region_kl(self) -> str | None:
        """The metric with the update's KL(pi_old || pi_theta) (the KL controller's input)."""
        return self.outputs.trust_region_kl

    def reduction(self, key: str) -> str:
        """'sum' (a micro-batch contribution to a globally normalised total) or 'mean'."""
        return self.outputs.reduction(key)

    def __call__(self, logprobs: Tensor, mb: MicroBatch) -> tuple[Tensor, Mapping[str, Any]]:
        from nemo_rence.algorithm import losses

        x = mb.extras
        needed = ["old_logprobs", "rewards"] + (["ref_logprobs"] if self.needs_reference else [])
        needed += ["engine_logprobs"] if self.correction is not None else []
        missing = [k for k in needed if getattr(x, k) is None]
        if missing:
            raise KeyError(
                f"loss {self.name!r} needs batch row data {missing}; got {sorted(x.present())}"
            )
        assert x.old_logprobs is not None and x.rewards is not None
        if self.correction is not None:
            assert x.engine_logprobs is not None
            weights = correction_weights(
                x.old_logprobs,
                x.engine_logprobs,
                mb.response_mask,
                self.correction,
                mb.group_ids,
            )
            logprobs = reweight_gradient(logprobs, weights)
        lb = losses.LossBatch(
            logprobs=logprobs,
            old_logprobs=x.old_logprobs,
            mask=mb.response_mask,
            rewards=x.rewards,
            group_ids=mb.group_ids,
            ref_logprobs=x.ref_logprobs,
            kl_coef=self.kl_coef,
            progress=self.progress,
            generator=self.generator,
            num_groups_global=mb.num_groups_global,
            num_tokens_global=mb.num_tokens_global,
        )
        return self.spec.fn(lb, self.config)


algorithm_loss = AlgorithmLoss
"""``algorithm_loss(name, cfg, kl_coef=..., progress=..., generator=..., correction=...)``: the
registered loss ``name`` as the policy's ``LossFn`` (an :class:`AlgorithmLoss`)."""


def metric_reduction(loss_fn: LossFn, key: str) -> str:
    """How ``train_step`` reduces ``loss_fn``'s metric ``key`` over micro-batches and DP ranks:
    the loss's declaration (``loss_fn.reduction``, e.g. :class:`AlgorithmLoss`) when it has one,
    else 'mean'. ``policy/loss`` (the loss itself) is always summed."""
    if key == "policy/loss":
        return "sum"
    reduction = getattr(loss_fn, "reduction", None)
    return str(reduction(key)) if callable(reduction) else "mean"
