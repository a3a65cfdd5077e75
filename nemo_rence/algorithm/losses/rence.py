"""ReNCE (Zhang & Stratos) and its ablations, plus the semi-online DPO baseline (Group-DPO).

Shapes (legend in ``batch.py``): per-token [N, T], per-rollout [N], per-group [G] / [G, K].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from nemo_rence.algorithm.kl import available_estimators, get_estimator
from nemo_rence.algorithm.losses.batch import LossBatch, masked_token_mean
from nemo_rence.algorithm.losses.contrastive import (
    Partition,
    all_pairs_loss,
    mnce_loss,
    partition,
    random_pair_loss,
    softmax_loss,
)
from nemo_rence.algorithm.losses.registry import LossOutputs, Metrics, register

__all__ = ["RenceConfig", "SemiOnlineDPOConfig", "rence_loss", "semi_online_dpo_loss"]


# ---- margins m(x, y), eq. (5) and Table 2 ----------------------------------------------------

MarginFn = Callable[[Tensor, Partition], Tensor]

MARGINS: dict[str, MarginFn] = {
    # m = r_max(x) - r(x, y): 0 for positives, larger for worse negatives (eq. 5).
    "reward_scaled": lambda r, part: part.group_max - r,
    # m = 1 for negatives, 0 for positives (Table 2, "constant margin", scaled by alpha).
    "constant": lambda r, part: (~part.is_pos).to(r.dtype),
    # no margin (Table 2 "No Margin"; Table 4 objective comparison).
    "none": lambda r, part: torch.zeros_like(r),
}


# ---- objectives of Table 4: per-group loss [G] from dense scores [G, K] ----------------------


@dataclass(frozen=True, eq=False)
class _ObjectiveOut:
    group_loss: Tensor
    metrics: Metrics


def _mnce(scores: Tensor, part: Partition, gen: torch.Generator | None) -> _ObjectiveOut:
    loss, pos_prob = mnce_loss(scores, scores, part)
    keep = part.pos & part.contrastive[:, None]
    mean_p = (pos_prob * keep).sum() / keep.sum().clamp_min(1)
    return _ObjectiveOut(loss, {"rence/pos_prob": mean_p.detach()})


def _softmax(scores: Tensor, part: Partition, gen: torch.Generator | None) -> _ObjectiveOut:
    return _ObjectiveOut(softmax_loss(scores, part), {})


def _random_pair(scores: Tensor, part: Partition, gen: torch.Generator | None) -> _ObjectiveOut:
    loss, _, _ = random_pair_loss(scores, part, gen)
    return _ObjectiveOut(loss, {})


def _all_pairs(scores: Tensor, part: Partition, gen: torch.Generator | None) -> _ObjectiveOut:
    return _ObjectiveOut(all_pairs_loss(scores, part), {})


OBJECTIVES: dict[str, Callable[[Tensor, Partition, torch.Generator | None], _ObjectiveOut]] = {
    "mnce": _mnce,
    "softmax": _softmax,
    "random_pair": _random_pair,
    "all_pairs": _all_pairs,
}


def _check_choice(field: str, value: str, allowed: list[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {allowed}, got {value!r}")


@dataclass
class RenceConfig:
    """Config of the ``rence`` loss (ReNCE paper, Sec. 3 and 4.1; ablations Tables 2 and 4).

    Attributes:
        beta: scale of the log-ratio score, eq. (2) (paper: 0.1). Must be > 0.
        alpha: scale of the margin, eq. (2) (paper: 0.5). Must be >= 0.
        margin: 'reward_scaled' (m = r_max - r, eq. 5, default), 'constant' (m = 1 for
            negatives, 0 for positives; Table 2) or 'none' (Table 2 "No Margin").
        objective: 'mnce' (eq. 1, default), 'softmax' (other positives in the denominator),
            'random_pair' (one sampled pos-neg pair per group, -log sigmoid(s+ - s-)) or
            'all_pairs' (mean pairwise loss over all pos-neg pairs = Group-DPO); Table 4.
        use_kl: add ``batch.kl_coef * KL(pi_old || pi_theta)`` (the trust region, Sec. 3.5).
            False (or kl_coef 0) is the "No Trust-Region KL" ablation of Table 2; the KL is still
            measured and reported as a metric for the controller.
        kl_estimator: per-token estimator of KL(pi_old || pi_theta) on the rollout tokens: 'k3'
            (paper: Schulman's unbiased estimator), 'k1' or 'k2'.
        score_norm: 'sum' (eq. 2 with the sequence log-ratio log pi_theta(y)/pi_old(y) =
            sum_t of the token log-ratios, the paper) or 'token_mean' (that sum divided by |y|,
            DAPO-like length normalisation; a diagnostic ablation, not in the paper).
    """

    beta: float = 0.1
    alpha: float = 0.5
    margin: Literal["reward_scaled", "constant", "none"] = "reward_scaled"
    objective: Literal["mnce", "softmax", "random_pair", "all_pairs"] = "mnce"
    use_kl: bool = True
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    score_norm: Literal["sum", "token_mean"] = "sum"

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        _check_choice("margin", self.margin, list(MARGINS))
        _check_choice("objective", self.objective, list(OBJECTIVES))
        _check_choice("kl_estimator", self.kl_estimator, available_estimators())
        _check_choice("score_norm", self.score_norm, ["sum", "token_mean"])


def trust_region_kl(batch: LossBatch, estimator: str) -> Tensor:
    """KL(pi_old || pi_theta) on the rollout tokens, as a sum over groups / group normaliser.

    Tokens are samples of pi_old, so q = pi_old, p = pi_theta (see ``kl.py``). Averaging: token
    mean per sequence, then mean over the group's rollouts, then over prompts (the weighting of
    the NCE term, and additive over micro-batches of whole groups).

    Returns:
        0-dim tensor (differentiable w.r.t. logprobs).
    """
    d = batch.log_ratio  # [N, T] log pi_theta - log pi_old, 0 on padding
    per_token = get_estimator(estimator)(torch.zeros_like(d), d)
    per_seq = masked_token_mean(per_token, batch.token_mask, batch.lengths)
    return batch.layout.mean(per_seq).sum() / batch.group_normaliser()


@register(
    "rence",
    config=RenceConfig,
    paper="Zhang & Stratos, ReNCE: Learning to Reason by Noise Contrastive Estimation",
    equation="eqs. (1), (2), (5); ablations Tables 2, 4",
    outputs=lambda cfg: LossOutputs(
        frozenset({"loss/total", "loss/rence", f"kl/{cfg.kl_estimator}"}),
        trust_region_kl=f"kl/{cfg.kl_estimator}",
    ),
)
def rence_loss(batch: LossBatch, cfg: RenceConfig) -> tuple[Tensor, Metrics]:
    """ReNCE multi-label NCE loss with reward-scaled margin and trust-region KL (eqs. 1, 2, 5).

    For each prompt x with rollouts G(x): P(x) = {y : r(x, y) = r_max(x)}, N(x) = G(x) \\ P(x),

        s(x, y) = beta * sum_t (log pi_theta(y_t) - log pi_old(y_t)) + alpha * m(x, y)   (eq. 2)
        m(x, y) = r_max(x) - r(x, y)                                                     (eq. 5)
        L(x)    = (1/|P(x)|) sum_{y in P(x)} -log softmax_{ {y} u N(x) }(s)(y)           (eq. 1)
        loss    = (1/#prompts) sum_x L(x) + kl_coef * KL(pi_old || pi_theta)

    The KL is k3 on the rollout tokens, averaged as in :func:`trust_region_kl`. Sequence
    log-probabilities are sums over response tokens (the per-token difference is summed, which
    keeps fp32 exact for long responses); ``score_norm='token_mean'`` divides that sum by |y|. Degenerate groups (all rewards equal) contribute zero
    to the NCE term and are counted in ``rence/degenerate_groups``; they still count in the
    number of prompts. Variants (margin, objective) per ``RenceConfig``.

    Args:
        batch: LossBatch with logprobs/old_logprobs/mask [N, T], rewards/group_ids [N],
            kl_coef (lambda), optional generator (random_pair), optional global normalisers.
        cfg: RenceConfig.
    Returns:
        (0-dim loss, metrics: loss/total, loss/rence, kl/<estimator>, kl/coef,
        rence/pos_prob (mnce), rence/degenerate_groups, rence/score_gap).
    """
    layout = batch.layout
    r = batch.compute_rewards
    part = partition(r, layout)
    seq_log_ratio = batch.log_ratio.sum(-1)  # [N]
    if cfg.score_norm == "token_mean":  # (1/|y|) sum_t: length-normalised ablation
        seq_log_ratio = seq_log_ratio / batch.lengths.clamp_min(1).to(seq_log_ratio.dtype)
    scores = cfg.beta * seq_log_ratio + cfg.alpha * MARGINS[cfg.margin](r, part)
    out = OBJECTIVES[cfg.objective](layout.dense(scores), part, batch.generator)
    nce = out.group_loss.sum() / batch.group_normaliser()

    kl = trust_region_kl(batch, cfg.kl_estimator)
    coef = batch.kl_coef if cfg.use_kl else 0.0
    total = nce + coef * kl if coef > 0 else nce

    with torch.no_grad():
        pos_mean = (scores * part.is_pos).sum() / part.is_pos.sum().clamp_min(1)
        neg_mean = (scores * ~part.is_pos).sum() / (~part.is_pos).sum().clamp_min(1)
    metrics: Metrics = {
        "loss/total": total.detach(),
        "loss/rence": nce.detach(),
        f"kl/{cfg.kl_estimator}": kl.detach(),
        "kl/coef": float(coef),
        "rence/degenerate_groups": part.num_degenerate.detach(),
        "rence/score_gap": (pos_mean - neg_mean).detach(),
        **out.metrics,
    }
    return total, metrics


@dataclass
class SemiOnlineDPOConfig:
    """Config of ``semi_online_dpo`` (Lanchantin et al. 2025, arXiv 2506.21495).

    Attributes:
        beta: DPO temperature beta (> 0). The ReNCE paper does not state its value; 0.1 (the
            usual DPO default) is an assumption.
    """

    beta: float = 0.1

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


@register(
    "semi_online_dpo",
    config=SemiOnlineDPOConfig,
    paper="Lanchantin et al. 2025, Bridging Offline and Online RL for LLMs (arXiv 2506.21495)",
    equation="DPO loss (Rafailov et al. 2023, eq. 7) averaged over all pos-neg pairs (Group-DPO)",
    outputs=lambda cfg: LossOutputs(frozenset({"loss/total", "loss/dpo"})),
    needs_reference=lambda cfg: True,  # pi_ref synchronised every s updates (reference.sync_every)
)
def semi_online_dpo_loss(batch: LossBatch, cfg: SemiOnlineDPOConfig) -> tuple[Tensor, Metrics]:
    """Group-DPO against a reference synchronised every s updates (semi-online DPO).

        h(y) = beta * sum_t (log pi_theta(y_t) - log pi_ref(y_t))
        L(x) = 1/(|P||N|) sum_{y+ in P(x), y- in N(x)} -log sigmoid(h(y+) - h(y-))
        loss = (1/#prompts) sum_x L(x)

    i.e. the DPO loss (Rafailov et al. 2023, eq. 7) averaged over every positive-negative pair of
    the group, as the ReNCE paper's baseline (Sec. 4.1) and its Table 4 "all-pairs". The trainer
    keeps pi_ref (``policy.reference``) and synchronises it every s = ``reference.sync_every``
    optimizer steps (the loss declares that it needs one); when s equals n_update the reference
    is pi_old, so called directly with ``ref_logprobs=None`` this loss uses ``old_logprobs``.
    Positives are the highest-reward rollouts (as in ReNCE); degenerate groups give 0.

    Args:
        batch: LossBatch with logprobs/old_logprobs/mask [N, T], optional ref_logprobs [N, T],
            rewards/group_ids [N].
        cfg: SemiOnlineDPOConfig.
    Returns:
        (0-dim loss, metrics: loss/total, loss/dpo, dpo/reward_margin, dpo/degenerate_groups).
    """
    layout = batch.layout
    part = partition(batch.compute_rewards, layout)
    if batch.ref_logprobs is None:
        log_ratio = batch.log_ratio
    else:
        log_ratio = batch.masked_logprobs - batch.reference_logprobs()
    h = cfg.beta * log_ratio.sum(-1)
    loss = all_pairs_loss(layout.dense(h), part).sum() / batch.group_normaliser()
    with torch.no_grad():
        pos_mean = (h * part.is_pos).sum() / part.is_pos.sum().clamp_min(1)
        neg_mean = (h * ~part.is_pos).sum() / (~part.is_pos).sum().clamp_min(1)
    metrics: Metrics = {
        "loss/total": loss.detach(),
        "loss/dpo": loss.detach(),
        "dpo/reward_margin": (pos_mean - neg_mean).detach(),
        "dpo/degenerate_groups": part.num_degenerate.detach(),
    }
    return loss, metrics
