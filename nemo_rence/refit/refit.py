"""Refit: move the policy's new weights into the rollout engine, every iteration, and verify it.

The steps, in order (:meth:`Refitter.refit`):

1. **export** — ``policy.export_weights()`` yields ``(hf_name, tensor)`` one tensor at a time,
   already gathered over TP/PP (the policy's job), so no second full copy of the model exists;
2. **cast** — optionally to the engine's dtype (``RefitConfig.dtype``);
3. **bucket** — tensors are grouped into buckets of at most ``bucket_bytes`` (one oversized
   tensor is a bucket of its own), bounding the extra memory in flight;
4. **send + update** — each bucket goes to ``engine.update_weights(bucket, version)``: in process
   on CPU (the ``hf`` engine copies in place), through the engine's API on GPU;
5. **finalize + version** — engines that apply weights in a cycle (TensorRT-LLM) get
   ``engine.finalize_weights(version)`` once after the last bucket; then the engine must report
   the new version, or the refit fails loudly;
6. **verify** — after the next generation, :meth:`Refitter.verify` compares the engine's
   per-token logprobs of its rollouts with the policy's logprobs of the same tokens under pi_old
   (:func:`logprob_gap`) and raises :class:`RefitMismatchError` past ``max_logprob_gap``. This
   catches wrong conversions, stale weights and precision bugs.

Logged every iteration: ``refit/seconds``, ``refit/bytes``, ``refit/tensors``, ``refit/buckets``,
``refit/peak_bucket_bytes`` (extra memory held at once), ``refit/logprob_gap`` (mean |diff|),
``refit/logprob_gap_max``, ``refit/token_mult_prob_error`` (mean exp|diff|, 1 when exact).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from nemo_rence.rollout.interface import GenerationEngine

__all__ = ["RefitConfig", "RefitMismatchError", "RefitReport", "Refitter", "logprob_gap"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class RefitMismatchError(RuntimeError):
    """The engine does not sample from the policy's weights (stale, wrong or imprecise refit)."""


@dataclass(frozen=True)
class RefitConfig:
    """How weights move from the policy to the engine, and how strictly that is checked."""

    bucket_bytes: int = 256 * 2**20
    """Largest bucket sent at once (bytes); bounds refit's extra memory."""
    dtype: str | None = None
    """Cast to 'float32', 'bfloat16' or 'float16' on the way; None keeps the policy's dtype."""
    max_logprob_gap: float = 0.05
    """Fail when the mean |engine - policy| token logprob gap exceeds this (nats)."""
    verify: bool = True
    """Check the gap every iteration (keep it on: it catches silent refit bugs)."""

    def __post_init__(self) -> None:
        if self.bucket_bytes < 1:
            raise ValueError(f"refit.bucket_bytes must be >= 1, got {self.bucket_bytes}")
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise ValueError(
                f"refit.dtype must be one of {sorted(_DTYPES)} or null, got {self.dtype!r}"
            )
        if self.max_logprob_gap <= 0:
            raise ValueError(f"refit.max_logprob_gap must be > 0, got {self.max_logprob_gap}")


@dataclass
class RefitReport:
    seconds: float
    bytes: int
    tensors: int
    buckets: int
    peak_bucket_bytes: int
    version: int

    def metrics(self) -> dict[str, float]:
        return {
            "refit/seconds": self.seconds,
            "refit/bytes": float(self.bytes),
            "refit/tensors": float(self.tensors),
            "refit/buckets": float(self.buckets),
            "refit/peak_bucket_bytes": float(self.peak_bucket_bytes),
            "refit/version": float(self.version),
        }


def _buckets(
    named: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int, dtype: torch.dtype | None
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named:
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


def logprob_gap(
    engine_logprobs: Sequence[Sequence[float]], policy_logprobs: torch.Tensor, mask: torch.Tensor
) -> dict[str, float]:
    """Engine-vs-policy agreement on the same response tokens.

    Args:
        engine_logprobs: per rollout, the engine's sampling logprob of each response token.
        policy_logprobs: [N, T] the policy's logprobs of the same tokens (right-padded).
        mask: [N, T] 1 on response tokens.

    Returns ``refit/logprob_gap`` = mean_t |d|, ``refit/logprob_gap_max`` = max_t |d| and
    ``refit/token_mult_prob_error`` = mean_t exp(|d|), with d = engine - policy.
    """
    eng = torch.zeros_like(policy_logprobs, dtype=torch.float64)
    for i, row in enumerate(engine_logprobs):
        eng[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.float64)
    m = mask.bool()
    if int(m.sum()) == 0:
        return {
            "refit/logprob_gap": 0.0,
            "refit/logprob_gap_max": 0.0,
            "refit/token_mult_prob_error": 1.0,
        }
    diff = (eng - policy_logprobs.detach().double()).abs()[m]
    return {
        "refit/logprob_gap": float(diff.mean()),
        "refit/logprob_gap_max": float(diff.max()),
        "refit/token_mult_prob_error": float(diff.exp().mean()),
    }


class Refitter:
    """Moves weights into ``engine`` (steps 1-5) and checks the result (step 6)."""

    def __init__(self, config: RefitConfig, engine: GenerationEngine) -> None:
        self.config = config
        self.engine = engine

    def refit(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> RefitReport:
        """Stream ``named_tensors`` (e.g. ``policy.export_weights()``) into the engine."""
        start = time.perf_counter()
        dtype = _DTYPES[self.config.dtype] if self.config.dtype else None
        total = tensors = buckets = peak = 0
        for bucket in _buckets(named_tensors, self.config.bucket_bytes, dtype):
            nbytes = sum(t.numel() * t.element_size() for _, t in bucket)
            peak = max(peak, nbytes)
            self.engine.update_weights(bucket, version)
            total += nbytes
            tensors += len(bucket)
            buckets += 1
        finalize = getattr(self.engine, "finalize_weights", None)
        if finalize is not None:
            finalize(version)
        if self.engine.version != version:
            raise RefitMismatchError(
                f"engine reports weight version {self.engine.version} after a refit to {version}"
            )
        return RefitReport(
            seconds=time.perf_counter() - start,
            bytes=total,
            tensors=tensors,
            buckets=buckets,
            peak_bucket_bytes=peak,
            version=version,
        )

    def verify(
        self,
        engine_logprobs: Sequence[Sequence[float]],
        policy_logprobs: torch.Tensor,
        mask: torch.Tensor,
    ) -> dict[str, float]:
        """Gap metrics; raises RefitMismatchError past ``max_logprob_gap`` when verify is on."""
        gap = logprob_gap(engine_logprobs, policy_logprobs, mask)
        # "not <=" so that a NaN gap (e.g. uninitialised engine weights) fails too.
        if self.config.verify and not gap["refit/logprob_gap"] <= self.config.max_logprob_gap:
            raise RefitMismatchError(
                f"engine and policy disagree on the rollouts' token logprobs: mean gap "
                f"{gap['refit/logprob_gap']:.4g} nats (max {gap['refit/logprob_gap_max']:.4g}) > "
                f"refit.max_logprob_gap={self.config.max_logprob_gap}. The engine is stale or the "
                "weight conversion / precision is wrong."
            )
        return gap
