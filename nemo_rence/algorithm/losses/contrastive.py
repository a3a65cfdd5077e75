"""Per-group contrastive objectives on sequence scores, shared by ReNCE, ConSPO, semi-online DPO.

Shapes (legend in ``batch.py``): scores arrive per rollout [N] and are laid out per group as
[G, K] (empty slots hold a finite filler and are masked out); every objective returns the
per-group loss [G], zero for degenerate groups (no negative, or no spread of rewards).
All masking is done with ``torch.where`` on finite values, so degenerate or padded entries can
never put NaN into a gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from nemo_rence.algorithm.losses.batch import GroupLayout

__all__ = [
    "Partition",
    "all_pairs_loss",
    "masked_logsumexp",
    "mnce_loss",
    "partition",
    "random_pair_loss",
    "softmax_loss",
]


@dataclass(frozen=True, eq=False)
class Partition:
    """Positive/negative split of every group (ReNCE paper Sec. 3.1).

    Attributes:
        is_pos: [N] bool, r == r_max(x) of the rollout's group.
        group_max: [N] r_max(x) of the rollout's group.
        pos: [G, K] bool, positive slots.
        neg: [G, K] bool, negative slots (the rest of the group).
        n_pos: [G] number of positives (float).
        n_neg: [G] number of negatives (float).
        contrastive: [G] bool, the group has at least one positive and one negative.
    """

    is_pos: Tensor
    group_max: Tensor
    pos: Tensor
    neg: Tensor
    n_pos: Tensor
    n_neg: Tensor
    contrastive: Tensor

    @property
    def num_degenerate(self) -> Tensor:
        """0-dim count of groups with no negative (all rewards equal)."""
        return (~self.contrastive).sum()


def partition(rewards: Tensor, layout: GroupLayout) -> Partition:
    """P(x) = rollouts with r = r_max(x), N(x) = the rest, per group.

    Args:
        rewards: [N] rewards.
        layout: the batch's group layout.
    """
    r = rewards.detach()
    gmax = r.new_full((layout.num_groups,), -torch.inf)
    gmax = gmax.scatter_reduce(0, layout.index, r, "amax", include_self=True)
    group_max = gmax[layout.index]
    is_pos = r == group_max
    valid = layout.valid()
    pos = layout.dense(is_pos, False)
    neg = valid & ~pos
    n_pos = pos.sum(-1).to(r.dtype)
    n_neg = neg.sum(-1).to(r.dtype)
    return Partition(is_pos, group_max, pos, neg, n_pos, n_neg, (n_pos > 0) & (n_neg > 0))


def masked_logsumexp(logits: Tensor, mask: Tensor) -> Tensor:
    """log sum_{k: mask} exp(logits[g, k]) per row: [G, K] -> [G]. Empty rows give 0 (mask them)."""
    empty = ~mask.any(-1, keepdim=True)
    filled = torch.where(mask, logits, torch.full_like(logits, -torch.inf))
    filled = torch.where(empty, torch.zeros_like(logits), filled)
    return torch.logsumexp(filled, -1)


def _mean_over_positives(per_pos: Tensor, part: Partition) -> Tensor:
    keep = part.pos & part.contrastive[:, None]
    per_pos = torch.where(keep, per_pos, torch.zeros_like(per_pos))
    return per_pos.sum(-1) / part.n_pos.clamp_min(1.0)


def mnce_loss(pos_logits: Tensor, neg_logits: Tensor, part: Partition) -> tuple[Tensor, Tensor]:
    """Multi-label NCE (ReNCE eq. 1, ConSPO eq. 10/15), per group.

    loss_g = (1/|P|) sum_{i in P} -log( e^{a_i} / (e^{a_i} + sum_{j in N} e^{b_j}) )
           = (1/|P|) sum_{i in P} softplus( LSE_{j in N}(b_j) - a_i ).

    Args:
        pos_logits: [G, K] logits a used for positives (their own term).
        neg_logits: [G, K] logits b used for negatives.
        part: the partition.
    Returns:
        ([G] per-group loss, [G, K] P+ = e^{a_i} / (e^{a_i} + sum_N e^{b_j}) on positive slots).
    """
    lse_neg = masked_logsumexp(neg_logits, part.neg)[:, None]
    per_pos = F.softplus(lse_neg - pos_logits)
    pos_prob = torch.sigmoid(pos_logits - lse_neg)
    return _mean_over_positives(per_pos, part), pos_prob


def softmax_loss(logits: Tensor, part: Partition) -> Tensor:
    """Softmax contrastive loss with the other positives in the denominator (ReNCE Table 4).

    loss_g = (1/|P|) sum_{i in P} -log( e^{s_i} / sum_{k in G(x)} e^{s_k} ).

    Args:
        logits: [G, K] scores.
        part: the partition.
    Returns:
        [G] per-group loss.
    """
    lse_all = masked_logsumexp(logits, part.pos | part.neg)[:, None]
    return _mean_over_positives(lse_all - logits, part)


def all_pairs_loss(logits: Tensor, part: Partition) -> Tensor:
    """Mean pairwise logistic loss over all positive-negative pairs (Group-DPO).

    loss_g = 1/(|P||N|) sum_{i in P, j in N} -log sigmoid(s_i - s_j).

    Args:
        logits: [G, K] scores.
        part: the partition.
    Returns:
        [G] per-group loss.
    """
    diff = logits[:, :, None] - logits[:, None, :]  # [G, K(pos), K(neg)]
    pairs = part.pos[:, :, None] & part.neg[:, None, :]
    per_pair = torch.where(pairs, F.softplus(-diff), torch.zeros_like(diff))
    return per_pair.sum((1, 2)) / (part.n_pos * part.n_neg).clamp_min(1.0)


def random_pair_loss(
    logits: Tensor, part: Partition, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor]:
    """-log sigmoid(s+ - s-) for ONE positive and ONE negative drawn uniformly per group.

    The draw: u ~ U(0,1)^{[G, K]} from ``generator`` (one call to ``torch.rand``); the positive
    (negative) with the largest u in its group is chosen, which is a uniform choice.

    Args:
        logits: [G, K] scores.
        part: the partition.
        generator: RNG for the draw (on the device of ``logits``), or None for the global RNG.
    Returns:
        ([G] per-group loss, [G] chosen positive slot, [G] chosen negative slot).
    """
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=torch.float64)
    minus_one = torch.full_like(u, -1.0)
    i_pos = torch.where(part.pos, u, minus_one).argmax(-1)
    i_neg = torch.where(part.neg, u, minus_one).argmax(-1)
    s_pos = logits.gather(1, i_pos[:, None])[:, 0]
    s_neg = logits.gather(1, i_neg[:, None])[:, 0]
    loss = torch.where(part.contrastive, F.softplus(s_neg - s_pos), torch.zeros_like(s_pos))
    return loss, i_pos, i_neg
