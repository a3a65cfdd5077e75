"""The input of every loss (:class:`LossBatch`) and the vectorised per-group tensor ops they share.

Shape legend (used in every file of this package)::

    N  rollouts in the (micro-)batch, rows of every [N, ...] tensor; groups may differ in size
    T  padded response length (columns); padding columns have mask 0 and arbitrary logprobs
    G  groups (prompts) present in the batch, numbered 0..G-1 in order of first appearance
    K  largest group size in the batch (the width of the dense [G, K] group layout)

Worked example (2 prompts, ragged groups, padding)::

    group_ids = [7, 7, 7, 3, 3]            # prompt 7 has 3 rollouts, prompt 3 has 2
    rewards   = [1., 0., 0.1, 0., 1.]
    mask      = [[1, 1, 0],                # rollout 0 has 2 response tokens, then padding
                 [1, 1, 1], [1, 0, 0], [1, 1, 1], [1, 1, 0]]
    -> G = 2, K = 3, group index = [0, 0, 0, 1, 1], slot in group = [0, 1, 2, 0, 1]

Micro-batching contract: a loss is ``sum over groups (or tokens) / global normaliser``. When the
trainer splits a mini-batch into micro-batches of WHOLE groups and passes the mini-batch's
``num_groups_global`` and ``num_tokens_global`` to each, the micro-batch losses sum exactly to the
mini-batch loss (and so do their gradients). Left as ``None`` they default to this batch's counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor

__all__ = [
    "LOG_RATIO_CLAMP",
    "SEQ_LOG_RATIO_CLAMP",
    "GroupLayout",
    "LossBatch",
    "group_standardized_advantages",
    "masked_token_mean",
    "safe_exp",
]

LOG_RATIO_CLAMP = 20.0
"""Token log-ratios are clamped to [-20, 20] before ``exp`` (verl's ``ppo_loss`` does the same).
A ratio e^20 ~ 4.9e8 is already meaningless for every clipped or gated loss (the clip binds at
1 +- 0.28 at most), so no loss value a paper defines changes where it is finite; beyond it the
unclamped fp32 ``exp`` gives inf (from a log-ratio of ~88.7) and ``0 * inf = NaN`` gradients even
for clipped tokens (prime-rl #2972)."""

SEQ_LOG_RATIO_CLAMP = 10.0
"""GSPO's length-normalised sequence log-ratio is clamped at 10 (verl's GSPO loss): e^10 ~ 2.2e4
against GSPO's clip range of 1 +- 4e-4."""


def safe_exp(log_ratio: Tensor, bound: float = LOG_RATIO_CLAMP) -> Tensor:
    """``exp(clamp(log_ratio, -bound, bound))``: a ratio that can neither overflow nor give NaN
    gradients. Outside the bound the gradient is 0 (the clamp's), which is what the clip of every
    clipped loss gives there anyway."""
    return log_ratio.clamp(-bound, bound).exp()


def as_compute_dtype(x: Tensor) -> Tensor:
    """Promote half/bfloat16 to float32 (float32 and float64 stay): the losses are exact in fp32."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


@dataclass(frozen=True, eq=False)
class GroupLayout:
    """Where each rollout sits in a dense ``[G, K]`` per-group layout.

    Attributes:
        index: [N] int64, the group (0..G-1) of each rollout.
        slot: [N] int64, the position of each rollout inside its group (0..size-1).
        sizes: [G] int64, rollouts per group.
        num_groups: G.
        width: K, the largest group size.
    """

    index: Tensor
    slot: Tensor
    sizes: Tensor
    num_groups: int
    width: int

    @staticmethod
    def from_group_ids(group_ids: Tensor) -> GroupLayout:
        """Number the groups in order of first appearance and give each rollout its slot."""
        n = group_ids.shape[0]
        _, inverse = torch.unique(group_ids, return_inverse=True)
        # Renumber groups by first appearance so that group order follows the batch order.
        first = torch.full((n,), n, dtype=torch.long, device=group_ids.device)
        first = first.scatter_reduce(
            0, inverse, torch.arange(n, device=group_ids.device), "amin", include_self=True
        )
        num_groups = int(inverse.max().item()) + 1 if n > 0 else 0
        first = first[:num_groups]
        rank = torch.empty_like(first)
        rank[torch.argsort(first)] = torch.arange(num_groups, device=group_ids.device)
        index = rank[inverse]
        sizes = torch.bincount(index, minlength=num_groups)
        order = torch.argsort(index, stable=True)
        starts = torch.cumsum(sizes, 0) - sizes
        slot = torch.empty_like(index)
        slot[order] = torch.arange(n, device=group_ids.device) - starts[index[order]]
        width = int(sizes.max().item()) if num_groups > 0 else 0
        return GroupLayout(index, slot, sizes, num_groups, width)

    def dense(self, values: Tensor, fill: float | bool = 0.0) -> Tensor:
        """Scatter per-rollout ``values`` [N] into [G, K]; empty slots hold ``fill``.

        Differentiable w.r.t. ``values`` (out-of-place ``index_put``).
        """
        out = values.new_full((self.num_groups, self.width), fill)
        return out.index_put((self.index, self.slot), values)

    def valid(self) -> Tensor:
        """[G, K] bool, True where a slot holds a rollout."""
        ones = torch.ones(self.index.shape[0], dtype=torch.bool, device=self.index.device)
        return self.dense(ones, False)

    def gather(self, dense: Tensor) -> Tensor:
        """Inverse of :meth:`dense`: [G, K] -> [N]."""
        return dense[self.index, self.slot]

    def sum(self, values: Tensor) -> Tensor:
        """Per-group sums of per-rollout ``values`` [N] -> [G]."""
        out = values.new_zeros(self.num_groups)
        return out.index_add(0, self.index, values)

    def mean(self, values: Tensor) -> Tensor:
        """Per-group means of per-rollout ``values`` [N] -> [G]."""
        return self.sum(values) / self.sizes.to(values.dtype)


@dataclass(eq=False)
class LossBatch:
    """Everything a loss needs for one (micro-)batch of whole groups.

    Args:
        logprobs: [N, T] per-token log pi_theta of the response tokens (requires grad).
        old_logprobs: [N, T] per-token log pi_old, the sampling policy (no grad).
        mask: [N, T] response-token mask (bool or 0/1); padding columns are ignored entirely.
        rewards: [N] scalar reward of each rollout.
        group_ids: [N] integer prompt id; rollouts of one prompt share it. Groups may differ in
            size and need not be contiguous.
        ref_logprobs: [N, T] per-token log pi_ref of a reference policy, or None.
        kl_coef: the trainer's (adaptive) KL coefficient lambda for ReNCE's trust region.
        progress: normalised training progress in [0, 1] (ConSPO's margin schedule).
        generator: torch.Generator for the losses that sample (ReNCE's random_pair); on the
            device of the tensors. None uses the global RNG.
        num_groups_global: groups in the whole mini-batch when this is one micro-batch of it.
        num_tokens_global: response tokens (mask sum) in the whole mini-batch, ditto.
    """

    logprobs: Tensor
    old_logprobs: Tensor
    mask: Tensor
    rewards: Tensor
    group_ids: Tensor
    ref_logprobs: Tensor | None = None
    kl_coef: float = 0.0
    progress: float = 0.0
    generator: torch.Generator | None = field(default=None, repr=False)
    num_groups_global: int | None = None
    num_tokens_global: int | float | None = None

    def __post_init__(self) -> None:
        if self.logprobs.dim() != 2:
            raise ValueError(f"logprobs must be [N, T], got shape {tuple(self.logprobs.shape)}")
        n, t = self.logprobs.shape
        for name in ("old_logprobs", "mask", "ref_logprobs"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (n, t):
                raise ValueError(
                    f"{name} must have shape {(n, t)} like logprobs, got {tuple(value.shape)}"
                )
        for name in ("rewards", "group_ids"):
            value = getattr(self, name)
            if tuple(value.shape) != (n,):
                raise ValueError(f"{name} must have shape {(n,)}, got {tuple(value.shape)}")
        if self.group_ids.is_floating_point() or self.group_ids.dtype == torch.bool:
            raise ValueError(f"group_ids must be an integer tensor, got {self.group_ids.dtype}")
        if not 0.0 <= self.progress <= 1.0:
            raise ValueError(f"progress must be in [0, 1], got {self.progress}")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.num_groups_global is not None and self.num_groups_global <= 0:
            raise ValueError(f"num_groups_global must be positive, got {self.num_groups_global}")
        if self.num_tokens_global is not None and self.num_tokens_global <= 0:
            raise ValueError(f"num_tokens_global must be positive, got {self.num_tokens_global}")

    # ---- derived quantities (computed once per batch) -----------------------------------------

    @cached_property
    def layout(self) -> GroupLayout:
        return GroupLayout.from_group_ids(self.group_ids)

    @cached_property
    def token_mask(self) -> Tensor:
        """[N, T] mask in the compute dtype (1.0 on response tokens, 0.0 on padding)."""
        return self.mask.to(self.compute_dtype)

    @property
    def compute_dtype(self) -> torch.dtype:
        return as_compute_dtype(self.logprobs).dtype

    @cached_property
    def lengths(self) -> Tensor:
        """[N] response lengths |y| (at least 1, so that empty responses never divide by 0)."""
        return self.token_mask.sum(-1).clamp_min(1.0)

    @cached_property
    def log_ratio(self) -> Tensor:
        """[N, T] log pi_theta - log pi_old per token, zero on padding (garbage never leaks)."""
        lp = as_compute_dtype(self.logprobs)
        old = as_compute_dtype(self.old_logprobs).to(lp.dtype)
        return torch.where(self.token_mask > 0, lp - old.detach(), torch.zeros_like(lp))

    @cached_property
    def masked_logprobs(self) -> Tensor:
        """[N, T] log pi_theta per token, zero on padding."""
        lp = as_compute_dtype(self.logprobs)
        return torch.where(self.token_mask > 0, lp, torch.zeros_like(lp))

    @cached_property
    def compute_rewards(self) -> Tensor:
        """[N] rewards in the compute dtype."""
        return self.rewards.detach().to(self.compute_dtype)

    def group_normaliser(self) -> float:
        """Number of groups the per-group losses are averaged over (global when micro-batched)."""
        if self.num_groups_global is not None:
            return float(self.num_groups_global)
        return float(max(self.layout.num_groups, 1))

    def token_normaliser(self) -> Tensor | float:
        """Number of response tokens for token-level normalisation (global when micro-batched)."""
        if self.num_tokens_global is not None:
            return float(self.num_tokens_global)
        return self.token_mask.sum().clamp_min(1.0)

    def reference_logprobs(self) -> Tensor:
        """[N, T] log pi_ref, zero on padding; raises if the batch has none."""
        if self.ref_logprobs is None:
            raise ValueError(
                "this loss needs ref_logprobs (a reference policy) but the batch has none"
            )
        ref = as_compute_dtype(self.ref_logprobs).to(self.compute_dtype).detach()
        return torch.where(self.token_mask > 0, ref, torch.zeros_like(ref))


def masked_token_mean(values: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
    """Per-sequence token mean: [N, T] -> [N], padding excluded (values there must be finite)."""
    return (values * mask).sum(-1) / lengths


def group_standardized_advantages(
    rewards: Tensor, layout: GroupLayout, *, scale: bool = True, eps: float = 1e-6
) -> Tensor:
    """Group-relative advantages, ConSPO paper eq. (1) (GRPO, Shao et al. 2024).

    A_i = (r_i - mean_g(r)) / (std_g(r) + eps) with the population std (1/G inside the sqrt);
    ``scale=False`` gives Dr. GRPO's A_i = r_i - mean_g(r). Groups with equal rewards get A = 0.

    Args:
        rewards: [N] rewards.
        layout: the batch's group layout.
    Returns:
        [N] advantages (no grad).
    """
    r = rewards.detach()
    mean = layout.mean(r)
    # Equal-reward groups get exactly 0 (the float mean of equal values can be off by an ulp).
    gmax = r.new_full((layout.num_groups,), -torch.inf).scatter_reduce(
        0, layout.index, r, "amax", include_self=True
    )
    gmin = r.new_full((layout.num_groups,), torch.inf).scatter_reduce(
        0, layout.index, r, "amin", include_self=True
    )
    spread = (gmax > gmin)[layout.index]
    centred = torch.where(spread, r - mean[layout.index], torch.zeros_like(r))
    if not scale:
        return centred
    var = layout.mean(centred * centred)
    std = var.sqrt()[layout.index]
    return centred / torch.where(spread, std + eps, torch.ones_like(std))
