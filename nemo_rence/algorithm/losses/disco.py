"""DisCO: discriminative constrained optimisation (Li et al. 2025, arXiv 2505.12366).

Shapes (legend in ``batch.py``): per-token [N, T], per-rollout [N], per-group [G] / [G, K].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from nemo_rence.algorithm.kl import available_estimators, get_estimator
from nemo_rence.algorithm.losses.batch import LossBatch, masked_token_mean, safe_exp
from nemo_rence.algorithm.losses.contrastive import Partition, masked_logsumexp, partition
from nemo_rence.algorithm.losses.registry import LossOutputs, Metrics, register

__all__ = ["DiscoConfig", "disco_loss"]

# Scoring functions s_theta(o, q) -> [N]: 'log_l' = (1/|o|) sum_t log pi_theta (log-likelihood),
# 'l_ratio' = (1/|o|) sum_t pi_theta / pi_old (likelihood ratio, no clipping; each token ratio is
# exp(clamp(log rho, -20, 20)), batch.safe_exp, so that fp32 cannot overflow).
SCORES: dict[str, Callable[[LossBatch], Tensor]] = {
    "log_l": lambda b: b.masked_logprobs.sum(-1) / b.lengths,
    "l_ratio": lambda b: masked_token_mean(safe_exp(b.log_ratio), b.token_mask, b.lengths),
}


def _negative_term_mean(s: Tensor, part: Partition, tau: float) -> Tensor:
    """DisCO-b: (1/|N|) sum_{j in N} s_j per group."""
    return torch.where(part.neg, s, torch.zeros_like(s)).sum(-1) / part.n_neg.clamp_min(1.0)


def _negative_term_lse(s: Tensor, part: Partition, tau: float) -> Tensor:
    """DisCO: tau * log((1/|N|) sum_{j in N} exp(s_j / tau)) per group."""
    lse = masked_logsumexp(s / tau, part.neg)
    return tau * (lse - part.n_neg.clamp_min(1.0).log())


OBJECTIVES: dict[str, Callable[[Tensor, Partition, float], Tensor]] = {
    "basic": _negative_term_mean,
    "lse": _negative_term_lse,
}


@dataclass
class DiscoConfig:
    """Config of the ``disco`` loss (Li et al. 2025; defaults from the authors' scripts).

    Attributes:
        score: 'log_l' (length-normalised log-likelihood, default) or 'l_ratio' (length-
            normalised likelihood ratio pi_theta / pi_old).
        objective: 'lse' (DisCO: log-sum-exp / DRO over negatives with temperature tau) or
            'basic' (DisCO-b: mean negative score).
        tau: temperature of the log-sum-exp (10). Must be > 0.
        delta: KL budget delta of the constraint KL(pi_old || pi_theta) <= delta (1e-4).
        penalty: weight beta of the squared-hinge penalty beta * [KL - delta]_+^2 (1e3).
        kl_estimator: per-token estimator of KL(pi_old || pi_theta) on the rollout tokens ('k1',
            the plain log-ratio, as in the authors' code; 'k2' or 'k3' also accepted).
    """

    score: Literal["log_l", "l_ratio"] = "log_l"
    objective: Literal["lse", "basic"] = "lse"
    tau: float = 10.0
    delta: float = 1e-4
    penalty: float = 1e3
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {list(SCORES)}, got {self.score!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {self.objective!r}")
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if not (self.delta >= 0 and math.isfinite(self.delta)):
            raise ValueError(f"delta must be a finite number >= 0, got {self.delta}")
        if not self.penalty >= 0:
            raise ValueError(f"penalty must be >= 0, got {self.penalty}")
        if self.kl_estimator not in available_estimators():
            raise ValueError(
                f"kl_estimator must be one of {available_estimators()}, got {self.kl_estimator!r}"
            )


@register(
    "disco",
    config=DiscoConfig,
    paper="Li et al. 2025, DisCO: Discriminative Constrained Optimization (arXiv 2505.12366)",
    equation="ConSPO paper eq. (8) without its sqrt(p(1-p)) weight (DisCO-b); log-sum-exp variant",
    outputs=lambda cfg: LossOutputs(
        frozenset({"loss/total", "loss/disco", f"kl/{cfg.kl_estimator}"}),
        trust_region_kl=f"kl/{cfg.kl_estimator}",
    ),
)
def disco_loss(batch: LossBatch, cfg: DiscoConfig) -> tuple[Tensor, Metrics]:
    """DisCO: increase positive scores, decrease negative ones, inside a KL trust region.

        s(o)   = (1/|o|) sum_t log pi_theta(o_t)        ('log_l')
               | (1/|o|) sum_t pi_theta(o_t)/pi_old(o_t) ('l_ratio', log-ratio clamped to +-20)
        J(q)   = (1/|P|) sum_{o in P} s(o) - tau log((1/|N|) sum_{o' in N} e^{s(o')/tau})   ('lse')
               | (1/|P|) sum_{o in P} s(o) - (1/|N|) sum_{o' in N} s(o')                      ('basic')
        KL(q)  = mean over the group's rollouts of the token-mean k1 of KL(pi_old || pi_theta)
        loss   = (1/#prompts) sum_q [ -J(q) + penalty * max(KL(q) - delta, 0)^2 ]

    DisCO-b is ConSPO eq. (8) without the difficulty weight sqrt(p(1 - p)) (ConSPO Sec. 2 and
    DisCO's "difficulty bias"), with non-clipped scores; DisCO replaces the negative mean by a
    log-sum-exp (a DRO-style soft maximum).
    Positives: r = r_max(q) > r_min(q) (binary rewards in the paper); degenerate groups give 0
    objective (their KL penalty still applies). Assumption: the paper penalises the expected KL
    of the batch; we apply the squared hinge per prompt so that the loss is a sum over whole
    groups (exact micro-batch additivity); it is identical for one prompt and tighter otherwise.
    Equation numbers of the paper could not be confirmed from a source; the forms follow the
    authors' description and released training scripts (tau 10, delta 1e-4, beta 1e3).

    Args:
        batch: LossBatch with logprobs/old_logprobs/mask [N, T], rewards/group_ids [N].
        cfg: DiscoConfig.
    Returns:
        (0-dim loss, metrics: loss/total, loss/disco, kl/<estimator>, disco/kl_violation_frac,
        disco/degenerate_groups).
    """
    layout = batch.layout
    part = partition(batch.compute_rewards, layout)
    s = layout.dense(SCORES[cfg.score](batch))
    pos_term = torch.where(part.pos, s, torch.zeros_like(s)).sum(-1) / part.n_pos.clamp_min(1.0)
    neg_term = OBJECTIVES[cfg.objective](s, part, cfg.tau)
    objective = torch.where(part.contrastive, pos_term - neg_term, torch.zeros_like(pos_term))

    d = batch.log_ratio
    per_token = get_estimator(cfg.kl_estimator)(torch.zeros_like(d), d)
    kl_group = layout.mean(masked_token_mean(per_token, batch.token_mask, batch.lengths))  # [G]
    hinge = (kl_group - cfg.delta).clamp_min(0.0)
    per_group = -objective + cfg.penalty * hinge * hinge
    loss = per_group.sum() / batch.group_normaliser()
    metrics: Metrics = {
        "loss/total": loss.detach(),
        "loss/disco": (-objective.sum() / batch.group_normaliser()).detach(),
        f"kl/{cfg.kl_estimator}": (kl_group.sum() / batch.group_normaliser()).detach(),
        "disco/kl_violation_frac": (kl_group > cfg.delta).float().mean().detach(),
        "disco/degenerate_groups": part.num_degenerate.detach(),
    }
    return loss, metrics
