"""ConSPO: contrastive sequence-level policy optimisation (Zhang et al., ConSPO paper Sec. 4.2-4.3).

Shapes (legend in ``batch.py``): per-token [N, T], per-rollout [N], per-group [G] / [G, K].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from nemo_rence.algorithm.losses.batch import LossBatch
from nemo_rence.algorithm.losses.contrastive import mnce_loss, partition
from nemo_rence.algorithm.losses.registry import Metrics, register

__all__ = ["ConspoConfig", "conspo_loss", "conspo_margin"]

# Margin schedules: (progress, M, warmup) -> m_t. 'cosine' is eq. (16); the others are the
# "w/ fixed margin" and "w/o scheduled margin" ablations of Table 6.
SCHEDULES: dict[str, Callable[[float, float, float], float]] = {
    "cosine": lambda p, m, w: 0.5 * m * (1.0 - math.cos(math.pi * min(p / w, 1.0))),
    "constant": lambda p, m, w: m,
    "none": lambda p, m, w: 0.0,
}


@dataclass
class ConspoConfig:
    """Config of the ``conspo`` loss (ConSPO paper, Sec. 4.2-4.3, defaults from Sec. 5.1).

    Attributes:
        tau: contrastive temperature tau of eq. (10) (paper: 10). Must be > 0.
        margin_max: target margin M of eq. (16) (paper: 0.01). Must be >= 0.
        warmup: fraction alpha of training over which the margin ramps up, eq. (16)
            (paper: 0.3). Must be in (0, 1].
        margin_schedule: 'cosine' (eq. 16, default), 'constant' (m_t = M, Table 6 "w/ fixed
            margin") or 'none' (m_t = 0, Table 6 "w/o scheduled margin").
    """

    tau: float = 10.0
    margin_max: float = 0.01
    warmup: float = 0.3
    margin_schedule: Literal["cosine", "constant", "none"] = "cosine"

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if not self.margin_max >= 0:
            raise ValueError(f"margin_max must be >= 0, got {self.margin_max}")
        if not 0 < self.warmup <= 1:
            raise ValueError(f"warmup must be in (0, 1], got {self.warmup}")
        if self.margin_schedule not in SCHEDULES:
            raise ValueError(
                f"margin_schedule must be one of {list(SCHEDULES)}, got {self.margin_schedule!r}"
            )


def conspo_margin(progress: float, cfg: ConspoConfig) -> float:
    """m_t = M/2 (1 - cos(pi * min(progress / warmup, 1))), ConSPO eqs. (15)-(16)."""
    return SCHEDULES[cfg.margin_schedule](progress, cfg.margin_max, cfg.warmup)


@register(
    "conspo",
    config=ConspoConfig,
    paper="Zhang et al., Revisiting RLVR from a Contrastive Perspective (ConSPO)",
    equation="eqs. (10), (15), (16)",
)
def conspo_loss(batch: LossBatch, cfg: ConspoConfig) -> tuple[Tensor, Metrics]:
    """ConSPO group-wise InfoNCE on length-normalised log-likelihoods with a scheduled margin.

        s(o)  = (1/|o|) sum_t log pi_theta(o_t)                               (Sec. 4.2)
        J(q)  = (1/N+) sum_i tau * log( e^{(s_i^+ - m_t)/tau}
                    / (e^{(s_i^+ - m_t)/tau} + sum_j e^{s_j^-/tau}) )          (eq. 15; eq. 10 at m_t=0)
        m_t   = M/2 (1 - cos(pi * min(progress / warmup, 1)))                  (eq. 16)
        loss  = -(1/#prompts) sum_q J(q)

    Positives are binary: r = r_max(q) and r_max(q) > r_min(q); negatives are the rest; groups
    with all rewards equal contribute 0 (counted in ``conspo/degenerate_groups``). The gradient
    identities of Lemma 2 (eqs. 12-14) hold for -loss w.r.t. the scores. The paper has no KL term.

    Args:
        batch: LossBatch with logprobs/mask [N, T], rewards/group_ids [N], progress in [0, 1].
            old_logprobs are not used by the loss itself.
        cfg: ConspoConfig.
    Returns:
        (0-dim loss, metrics: loss/total, loss/conspo, conspo/margin, conspo/pos_prob,
        conspo/degenerate_groups).
    """
    layout = batch.layout
    part = partition(batch.compute_rewards, layout)
    score = batch.masked_logprobs.sum(-1) / batch.lengths  # [N]
    m_t = conspo_margin(batch.progress, cfg)
    logits = layout.dense(score) / cfg.tau
    group_loss, pos_prob = mnce_loss(logits - m_t / cfg.tau, logits, part)
    loss = cfg.tau * group_loss.sum() / batch.group_normaliser()
    keep = part.pos & part.contrastive[:, None]
    metrics: Metrics = {
        "loss/total": loss.detach(),
        "loss/conspo": loss.detach(),
        "conspo/margin": m_t,
        "conspo/pos_prob": ((pos_prob * keep).sum() / keep.sum().clamp_min(1)).detach(),
        "conspo/degenerate_groups": part.num_degenerate.detach(),
    }
    return loss, metrics
