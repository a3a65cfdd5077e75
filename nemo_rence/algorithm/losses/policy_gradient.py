"""Clipped / gated policy-gradient losses: GRPO and its descendants (DAPO, Dr. GRPO, GSPO, CISPO,
GMPO, SAPO), plus DAPO's overlong reward shaping.

Shapes (legend in ``batch.py``): per-token [N, T], per-rollout [N], per-group [G].
Token ratio rho_t = pi_theta(y_t) / pi_old(y_t) = exp(log_ratio); advantages are per rollout and
carry no gradient. Overflow: every ratio here is ``exp(clamp(log_ratio, -20, 20))`` (GSPO's
sequence log-ratio: ``min(., 10)``), as verl does, see ``batch.LOG_RATIO_CLAMP``; the papers' values
are unchanged wherever the clip binds or the ratio is below e^20, and a token with an fp32
log-ratio of 99 leaves every loss and gradient finite. Padding tokens have log_ratio 0 and are excluded by the aggregations below.

Aggregations (each a sum over groups or tokens divided by a global normaliser, so micro-batches
of whole groups add up exactly; see ``batch.py``):

    seq_mean      (1/#prompts) sum_q (1/|G_q|) sum_i (1/|o_i|) sum_t l_{i,t}   (GRPO eq. 3)
    token_mean    (1/sum_i |o_i|) sum_i sum_t l_{i,t}                           (DAPO, CISPO)
    seq_sum_const (1/#prompts) sum_q (1/|G_q|) sum_i (1/L) sum_t l_{i,t}       (Dr. GRPO)
    group_mean    (1/#prompts) sum_q (1/|G_q|) sum_i l_i   for sequence-level l_i (GSPO, GMPO)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nemo_rence.algorithm.kl import k3
from nemo_rence.algorithm.losses.batch import (
    LOG_RATIO_CLAMP,
    SEQ_LOG_RATIO_CLAMP,
    LossBatch,
    group_standardized_advantages,
    masked_token_mean,
    safe_exp,
)
from nemo_rence.algorithm.losses.registry import LossOutputs, Metrics, register

__all__ = [
    "CispoConfig",
    "DapoConfig",
    "DrGrpoConfig",
    "GmpoConfig",
    "GrpoConfig",
    "GspoConfig",
    "SapoConfig",
    "overlong_penalty",
]


# ---- shared pieces ------------------------------------------------------------------------------


def _seq_mean(batch: LossBatch, per_token: Tensor) -> Tensor:
    per_seq = masked_token_mean(per_token, batch.token_mask, batch.lengths)
    return _group_mean(batch, per_seq)


def _group_mean(batch: LossBatch, per_seq: Tensor) -> Tensor:
    return batch.layout.mean(per_seq).sum() / batch.group_normaliser()


def _token_mean(batch: LossBatch, per_token: Tensor) -> Tensor:
    return (per_token * batch.token_mask).sum() / batch.token_normaliser()


def _local_token_frac(batch: LossBatch, flags: Tensor) -> Tensor:
    m = batch.token_mask
    return ((flags.to(m.dtype) * m).sum() / m.sum().clamp_min(1.0)).detach()


def _clipped_surrogate(
    ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float
) -> tuple[Tensor, Tensor]:
    """PPO surrogate min(rho A, clip(rho, 1-eps_low, 1+eps_high) A) and where the clip binds.

    Args:
        ratio: [N, T] (or [N]) importance ratios.
        adv: broadcastable advantages.
    Returns:
        (surrogate to MAXIMISE, bool mask of entries where the clipped branch is active).
    """
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    surrogate = torch.minimum(ratio * adv, clipped * adv)
    active = ((adv > 0) & (ratio > 1.0 + eps_high)) | ((adv < 0) & (ratio < 1.0 - eps_low))
    return surrogate, active


def _check_eps(name: str, value: float, upper: float | None = None) -> None:
    if not value >= 0 or (upper is not None and not value < upper):
        bound = f"in [0, {upper:g})" if upper is not None else ">= 0"
        raise ValueError(f"{name} must be {bound}, got {value}")


def _pg_metrics(name: str, loss: Tensor, pg: Tensor, clip_frac: Tensor, adv: Tensor) -> Metrics:
    return {
        "loss/total": loss.detach(),
        f"loss/{name}": pg.detach(),
        "clip/frac": clip_frac,
        "pg/adv_abs_mean": adv.abs().mean().detach(),
    }


# ---- GRPO -----------------------------------------------------------------------------------------


@dataclass
class GrpoConfig:
    """Config of ``grpo`` (ConSPO paper eqs. (1), (3), (4); Shao et al. 2024).

    Attributes:
        eps: ratio clipping epsilon of eq. (4) (0.2). Must be in [0, 1).
        kl_beta: coefficient beta of the KL(pi_theta || pi_ref) term of eq. (3), estimated per
            token with k3 (DeepSeekMath eq. 4). 0 disables it (then ref_logprobs are not needed).
        adv_eps: added to the group std in eq. (1) so that equal-reward groups get A = 0.
    """

    eps: float = 0.2
    kl_beta: float = 0.0
    adv_eps: float = 1e-6

    def __post_init__(self) -> None:
        _check_eps("eps", self.eps, 1.0)
        _check_eps("kl_beta", self.kl_beta)
        if not self.adv_eps > 0:
            raise ValueError(f"adv_eps must be > 0, got {self.adv_eps}")


@register(
    "grpo",
    config=GrpoConfig,
    paper="Shao et al. 2024 (DeepSeekMath), as written in the ConSPO paper",
    equation="ConSPO paper eqs. (1), (3), (4)",
    # kl/ref_k3 is KL(pi_theta || pi_ref): a penalty to the reference, not a trust region
    outputs=lambda cfg: LossOutputs(
        frozenset({"loss/total", "loss/grpo"} | ({"kl/ref_k3"} if cfg.kl_beta > 0 else set()))
    ),
    needs_reference=lambda cfg: cfg.kl_beta > 0,
)
def grpo_loss(batch: LossBatch, cfg: GrpoConfig) -> tuple[Tensor, Metrics]:
    """GRPO clipped surrogate with group-standardised advantages (ConSPO paper eqs. 1, 3, 4).

        A_i     = (r_i - mean_q r) / (std_q r + adv_eps)     population std      (eq. 1)
        rho_i,t = pi_theta(o_i,t) / pi_old(o_i,t) = exp(clamp(log rho, -20, 20))
        f       = min(rho A, clip(rho, 1 - eps, 1 + eps) A)                      (eq. 4)
        l_i,t   = -f + kl_beta * k3_t,  k3_t = e^{d} - d - 1, d = min(lp_ref - lp, 20) (kl.k3)
        loss    = (1/#prompts) sum_q (1/G) sum_i (1/|o_i|) sum_t l_i,t            (eq. 3)

    Args:
        batch: LossBatch with logprobs/old_logprobs/mask [N, T], rewards/group_ids [N];
            ref_logprobs [N, T] when kl_beta > 0.
        cfg: GrpoConfig.
    Returns:
        (0-dim loss, metrics: loss/total, loss/grpo, kl/ref_k3 (KL(pi_theta || pi_ref) by k3, if
        kl_beta > 0), clip/frac, ...).
    """
    adv = group_standardized_advantages(batch.compute_rewards, batch.layout, eps=cfg.adv_eps)
    surrogate, active = _clipped_surrogate(
        safe_exp(batch.log_ratio), adv[:, None], cfg.eps, cfg.eps
    )
    pg = _seq_mean(batch, -surrogate)
    total = pg
    metrics = _pg_metrics("grpo", pg, pg, _local_token_frac(batch, active), adv)
    if cfg.kl_beta > 0:
        kl = _seq_mean(batch, k3(batch.masked_logprobs, batch.reference_logprobs()))
        total = pg + cfg.kl_beta * kl
        metrics["kl/ref_k3"] = kl.detach()
        metrics["loss/total"] = total.detach()
    return total, metrics


# ---- DAPO -----------------------------------------------------------------------------------------


def overlong_penalty(lengths: Tensor, max_len: int, cache_len: int) -> Tensor:
    """DAPO soft overlong punishment (Yu et al. 2025, arXiv 2503.14476, eq. 13).

        R(y) = 0                                 if |y| <= L_max - L_cache
             = ((L_max - L_cache) - |y|) / L_cache   if L_max - L_cache < |y| <= L_max
             = -1                                if |y| > L_max

    A pure reward transform: add it to the task reward before computing advantages.

    Args:
        lengths: [N] response lengths |y| (any numeric dtype).
        max_len: L_max, the maximum response length (> cache_len).
        cache_len: L_cache, the punishment buffer (> 0).
    Returns:
        [N] penalties in [-1, 0] (float32, or float64 for float64 input).
    """
    if not 0 < cache_len < max_len:
        raise ValueError(
            f"need 0 < cache_len < max_len, got cache_len={cache_len}, max_len={max_len}"
        )
    length = lengths.to(torch.float64 if lengths.dtype == torch.float64 else torch.float32)
    free = max_len - cache_len
    soft = (free - length) / cache_len
    return torch.where(
        length <= free,
        torch.zeros_like(length),
        torch.where(length <= max_len, soft, -torch.ones_like(length)),
    )


@dataclass
class DapoConfig:
    """Config of ``dapo`` (Yu et al. 2025, arXiv 2503.14476).

    Attributes:
        eps_low: lower clip epsilon (0.2), "clip-higher" Sec. 3.1. Must be in [0, 1).
        eps_high: upper clip epsilon (0.28). Must be >= 0.
        overlong_shaping: add :func:`overlong_penalty` (eq. 13) of the response lengths (mask
            sums) to the rewards inside the loss, before the advantages. Leave False when the
            trainer already shaped the rewards.
        overlong_max_len: L_max of eq. 13 (the max response length). Used when shaping.
        overlong_cache_len: L_cache of eq. 13 (paper: 4096). Used when shaping.
        adv_eps: added to the group std of the advantages.
    """

    eps_low: float = 0.2
    eps_high: float = 0.28
    overlong_shaping: bool = False
    overlong_max_len: int = 20480
    overlong_cache_len: int = 4096
    adv_eps: float = 1e-6

    def __post_init__(self) -> None:
        _check_eps("eps_low", self.eps_low, 1.0)
        _check_eps("eps_high", self.eps_high)
        if not 0 < self.overlong_cache_len < self.overlong_max_len:
            raise ValueError(
                "need 0 < overlong_cache_len < overlong_max_len, got "
                f"overlong_cache_len={self.overlong_cache_len}, overlong_max_len={self.overlong_max_len}"
            )
        if not self.adv_eps > 0:
            raise ValueError(f"adv_eps must be > 0, got {self.adv_eps}")


@register(
    "dapo",
    config=DapoConfig,
    paper="Yu et al. 2025, DAPO (arXiv 2503.14476)",
    equation="eq. (8) (clip-higher, token-level loss); eq. (13) overlong shaping",
)
def dapo_loss(batch: LossBatch, cfg: DapoConfig) -> tuple[Tensor, Metrics]:
    """DAPO: decoupled clip and token-level policy-gradient loss (Yu et al. 2025, eq. 8).

        A_i   = (R_i - mean_q R) / (std_q R + adv_eps),  R = r (+ overlong penalty, eq. 13)
        rho   = exp(clamp(log rho, -20, 20))
        l_i,t = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)
        loss  = (1 / sum_i |o_i|) sum_i sum_t l_i,t     (all tokens of the mini-batch)

    No KL term (DAPO removes it). Dynamic sampling is the filter's job, not the loss's.

    Args:
        batch: LossBatch with logprobs/old_logprobs/mask [N, T], rewards/group_ids [N]; pass
            num_tokens_global when micro-batching.
        cfg: DapoConfig.
    Returns:
        (0-dim loss, metrics: loss/total, loss/dapo, clip/frac, pg/adv_abs_mean).
    """
    rewards = batch.compute_rewards
    if cfg.overlong_shaping:
        penalty = overlong_penalty(batch.lengths, cfg.overlong_max_len, cfg.overlong_cache_len)
        rewards = rewards + penalty.to(rewards.dtype)
    adv = group_standardized_advantages(rewards, batch.layout, eps=cfg.adv_eps)
    ratio = safe_exp(batch.log_ratio)
    surrogate, active = _clipped_surrogate(ratio, adv[:, None], cfg.eps_low, cfg.eps_high)
    loss = _token_mean(batch, -surrogate)
    return loss, _pg_metrics("dapo", loss, loss, _local_token_frac(batch, active), adv)


# ---- Dr. GRPO -------------------------------------------------------------------------------------


@dataclass
class DrGrpoConfig:
    """Config of ``dr_grpo`` (Liu et al. 2025, arXiv 2503.20783).

    Attributes:
        eps: ratio clipping epsilon (0.2). Must be in [0, 1).
        norm_len: the constant L dividing each response's token sum (the generation budget,
            i.e. the max response length). Must be > 0. Default: the ReNCE paper's 6656.
    """

    eps: float = 0.2
    norm_len: int = 6656

    def __post_init__(self) -> None:
        _check_eps("eps", self.eps, 1.0)
        if not self.norm_len > 0:
            raise ValueError(f"norm_len must be > 0, got {self.norm_len}")


@register(
    "dr_grpo",
    config=DrGrpoConfig,
    paper="Liu et al. 2025, Understanding R1-Zero-Like Training (arXiv 2503.20783)",
    equation="ConSPO paper eqs. (1), (3) without the std and the 1/|o_i| (Dr. GRPO, Sec. 3.2)",
)
def dr_grpo_loss(batch: LossBatch, cfg: DrGrpoConfig) -> tuple[Tensor, Metrics]:
    """Dr. GRPO ("GRPO done right", Liu et al. 2025, Sec. 3.2): ConSPO eqs. (1), (3) minus two biases.

        A_i   = r_i - mean_q r                          (no std normalisation)
        rho   = exp(clamp(log rho, -20, 20))
        l_i,t = -min(rho A, clip(rho, 1 - eps, 1 + eps) A)
        loss  = (1/#prompts) sum_q (1/G) sum_i (1/L) sum_t l_i,t     (no 1/|o_i|; L constant)

    The paper's objective drops 1/|o_i|; its released code divides the token sum by a constant
    (the generation budget) to keep the scale, which is ``norm_len`` here. No KL (beta = 0).

    Args:
        batch: LossBatch with logprobs/old_logprobs/mask [N, T], rewards/group_ids [N].
        cfg: DrGrpoConfig.
    Returns:
        (0-dim loss, metrics: loss/total, loss/dr_grpo, clip/frac, pg/adv_abs_mean).
    """
    adv = group_standardized_advantages(batch.compute_rewards, batch.layout, scale=False)
    surrogate, active = _clipped_surrogate(
        safe_exp(batch.log_ratio), adv[:, None], cfg.eps, cfg.eps
    )
    per_seq = (-surrogate * batch.token_mask).sum(-1) / float(cfg.norm_len)
    loss = _group_mean(batch, per_seq)
    return loss, _pg_metrics("dr_grpo", loss, loss, _local_token_frac(batch, active), adv)


# ---- GSPO -----------------------------------------------------------------------------------------


@dataclass
class GspoConfig:
    """Config of ``gspo`` (Zheng et al. 2025, arXiv 2507.18071).

    Attributes:
        eps_low: left clip range of the sequence ratio (paper: 3e-4). Must be in [0, 1).
        eps_high: right clip range (paper: 4e-4). Must be >= 0.
        adv_eps: added to the group std of the advantages.
    """

    eps_low: float = 3e-4
    eps_high: float = 4e-4
    adv_eps: float = 1e-6

    def __post_init__(self) -> None:
        _check_eps("eps_low", self.eps_low, 1.0)
        _check_eps("eps_high", self.eps_high)
        if not self.adv_eps > 0:
            raise ValueError(f"adv_eps must be > 0, got {self.adv_eps}")


@register(
    "gspo",
    config=GspoConfig,
    paper="Zheng et al. 2025, Group Sequence Policy Optimization (arXiv 2507.18071)",
    equation="eqs. (5)-(7)",
)
def gspo_loss(batch: LossBatch, cfg: GspoConfig) -> tuple[Tensor, Metrics]:
    """GSPO: sequence-level, length-normalised importance ratio with sequence clipping.

        s_i  = (pi_theta(o_i) / pi_old(o_i))^{1/|o_i|} = exp((1/|o_i|) sum_t log rho_i,t)  (eq. 7)
               computed as exp(min((1/|o_i|) sum_t log rho_i,t, 10)) (verl's clamp)
        A_i  = (r_i - mean_q r) / (std_q r + adv_eps)                                       (eq. 6)
        loss = -(1/#prompts) sum_q (1/G) sum_i min(s_i A_i, clip(s_i, 1-eps_low, 1+eps_high) A_i)
                                                                                            (eq. 5)
    Args:
        batch: LossBatch with logprobs/old_logprobs/mask [N, T], rewards/group_ids [N].
        cfg: GspoConfig.
    Returns:
        (0-dim loss, metrics: loss/total, loss/gspo, clip/frac (fraction of sequences), ...).
    """
    adv = group_standardized_advantages(batch.compute_rewards, batch.layout, eps=cfg.adv_eps)
    seq_log_ratio = batch.log_ratio.sum(-1) / batch.lengths
    seq_ratio = seq_log_ratio.clamp(max=SEQ_LOG_RATIO_CLAMP).exp()
    surrogate, active = _clipped_surrogate(seq_ratio, adv, cfg.eps_low, cfg.eps_high)
    loss = _group_mean(batch, -surrogate)
    frac = active.to(seq_ratio.dtype).mean().detach()
    return loss, _pg_metrics("gspo", loss, loss, frac, adv)


# ---- CISPO ----------------------------------------------------------------------------------------


@dataclass
class CispoConfig:
    """Config of ``cispo`` (MiniMax-M1, arXiv 2506.13585, Sec. 3.1).

    Attributes:
        eps_low: lower IS-weight bound 1 - eps_low, or None for no lower bound (the paper sets
            eps_low "to a large value", i.e. no lower bound).
        eps_high: upper IS-weight bound 1 + eps_high. The paper tunes it but does not print a
            value; 0.28 (DAPO's clip-higher) is an assumption. Must be >= 0.
        adv_eps: added to the group std of the advantages.
    """

    eps_low: float | None = None
    eps_high: float = 0.28
    adv_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.eps_low is not None:
            _check_eps("eps_low", self.eps_low)
        _check_eps("eps_high", self.eps_high)
        if not self.adv_eps > 0:
            raise ValueError(f"adv_eps must be > 0, got {self.adv_eps}")


@register(
    "cispo",
    config=CispoConfig,
    paper="MiniMax 2025, MiniMax-M1 (arXiv 2506.13585), CISPO",
    equation="eqs. (4)-(5)",
)
def cispo_loss(batch: LossBatch, cfg: CispoConfig) -> tuple[Tensor, Metrics]:
    """CISPO: clipped IS weight (stop-gradient) times the token log-prob, token-level mean.

        w_i,t = sg(clip(rho_i,t, 1 - eps_low, 1 + eps_high))                       (eq. 5)
        rho   = exp(clamp(log rho, -20, 20))
        loss  = -(1 / sum_i |o_i|) sum_i sum_t w_i,t A_i log pi_theta(o_i,t)        (eq. 4)

    with group-standardised A_i (GRPO eq. 1). Every token keeps a gradient (none is dropped by
    the clip); the loss value itself is a surrogate whose gradient is the CISPO update.

    Args:
        batch: LossBatch with logprobs/old_logprobs/mask [N, T], rewards/group_ids [N]; pass
            num_tokens_global when micro-batching.
        cfg: CispoConfig.
    Returns:
        (0-dim loss, metrics: loss/total, loss/cispo, clip/frac (weights truncated), ...).
    """
    adv = group_standardized_advantages(batch.compute_rewards, batch.layout, eps=cfg.adv_eps)
    ratio = safe_exp(batch.log_ratio.detach())
    low = 1.0 - cfg.eps_low if cfg.eps_low is not None else 0.0
    weight = ratio.clamp(low, 1.0 + cfg.eps_high)
    loss = _token_mean(batch, -(weight * adv[:, None]) * batch.masked_logprobs)
    active = (ratio > 1.0 + cfg.eps_high) | (ratio < low)
    return loss, _pg_metrics("cispo", loss, loss, _local_token_frac(batch, active), adv)


# ---- GMPO -----------------------------------------------------------------------------------------


@dataclass
class GmpoConfig:
    """Config of ``gmpo`` (Zhao et al. 2025, arXiv 2507.20673).

    Attributes:
        eps_low: log-space lower clip: log rho >= -eps_low (paper: 0.4, i.e. rho >= e^-0.4).
        eps_high: log-space upper clip: log rho <= eps_high (paper: 0.4).
        adv_eps: added to the group std of the advantages.
    """

    eps_low: float = 0.4
    eps_high: float = 0.4
    adv_eps: float = 1e-6

    def __post_init__(self) -> None:
        _check_eps("eps_low", self.eps_low)
        _check_eps("eps_high", self.eps_high)
        if not self.adv_eps > 0:
            raise ValueError(f"adv_eps must be > 0, got {self.adv_eps}")


@register(
    "gmpo",
    config=GmpoConfig,
    paper="Zhao et al. 2025, Geometric-Mean Policy Optimization (arXiv 2507.20673)",
    equation="GMPO objective (Sec. 3, eq. 4 of arXiv v1; numbering assumed)",
)
def gmpo_loss(batch: LossBatch, cfg: GmpoConfig) -> tuple[Tensor, Metrics]:
    """GMPO: geometric mean of token ratios, clipped per token in log space by the sign of A.

        d_i,t  = clamp(log rho_i,t, -20, 20);  c_i,t = clip(d_i,t, -eps_low, eps_high)
        d'_i,t = sgn(A_i) * min(sgn(A_i) d_i,t, sgn(A_i) c_i,t)     (one-sided PPO trust region)
        J      = (1/#prompts) sum_q (1/G) sum_i A_i * exp((1/|o_i|) sum_t d'_i,t)
        loss   = -J

    i.e. A_i * prod_t min(rho A-sided, clip(rho))^{1/|o_i|}: the geometric mean replaces GRPO's
    arithmetic token mean. The equation number and the exact sign convention follow the
    authors' description (clip each token in log space before the geometric mean); assumption.

    Args:
        batch: LossBatch with logprobs/old_logprobs/mask [N, T], rewards/group_ids [N].
        cfg: GmpoConfig.
    Returns:
        (0-dim loss, metrics: loss/total, loss/gmpo, clip/frac, pg/adv_abs_mean).
    """
    adv = group_standardized_advantages(batch.compute_rewards, batch.layout, eps=cfg.adv_eps)
    d = batch.log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    sgn = torch.sign(adv)[:, None]
    c = d.clamp(-cfg.eps_low, cfg.eps_high)
    d_min = sgn * torch.minimum(sgn * d, sgn * c)
    seq_ratio = ((d_min * batch.token_mask).sum(-1) / batch.lengths).exp()  # |.| <= 20
    loss = _group_mean(batch, -adv * seq_ratio)
    active = ((sgn > 0) & (d > cfg.eps_high)) | ((sgn < 0) & (d < -cfg.eps_low))
    return loss, _pg_metrics("gmpo", loss, loss, _local_token_frac(batch, active), adv)


# ---- SAPO -----------------------------------------------------------------------------------------


@dataclass
class SapoConfig:
    """Config of ``sapo`` (Gao et al. 2025, Soft Adaptive Policy Optimization, arXiv 2511.20347).

    Attributes:
        tau_pos: gate temperature for A > 0 (paper: 1.0). Must be > 0.
        tau_neg: gate temperature for A <= 0 (paper: 1.05; tau_neg > tau_pos damps negative
            updates faster). Must be > 0.
        adv_eps: added to the group std of the advantages.
    """

    tau_pos: float = 1.0
    tau_neg: float = 1.05
    adv_eps: float = 1e-6

    def __post_init__(self) -> None:
        if not self.tau_pos > 0:
            raise ValueError(f"tau_pos must be > 0, got {self.tau_pos}")
        if not self.tau_neg > 0:
            raise ValueError(f"tau_neg must be > 0, got {self.tau_neg}")
        if not self.adv_eps > 0:
            raise ValueError(f"adv_eps must be > 0, got {self.adv_eps}")


@register(
    "sapo",
    config=SapoConfig,
    paper="Gao et al. 2025, Soft Adaptive Policy Optimization (arXiv 2511.20347)",
    equation="ConSPO paper eq. (3) with eq. (4)'s clip replaced by the soft gate (SAPO Sec. 3)",
)
def sapo_loss(batch: LossBatch, cfg: SapoConfig) -> tuple[Tensor, Metrics]:
    """SAPO: a smooth temperature-controlled gate instead of eq. (4)'s hard clip (ConSPO numbering).

        tau_i   = tau_pos if A_i > 0 else tau_neg
        rho     = exp(clamp(log rho, -20, 20))
        f_i,t   = (4 / tau_i) * sigmoid(tau_i (rho_i,t - 1))
        loss    = -(1/#prompts) sum_q (1/G) sum_i (1/|o_i|) sum_t f_i,t A_i

    d f / d rho = 4 s (1 - s) with s = sigmoid(tau (rho - 1)): 1 on-policy (so the first update
    equals GRPO's), decaying smoothly off-policy. Aggregation is GRPO's sequence mean, as in the
    paper's objective (assumption where the paper's text could not be checked).

    Args:
        batch: LossBatch with logprobs/old_logprobs/mask [N, T], rewards/group_ids [N].
        cfg: SapoConfig.
    Returns:
        (0-dim loss, metrics: loss/total, loss/sapo, clip/frac (gate weight < 0.5), ...).
    """
    adv = group_standardized_advantages(batch.compute_rewards, batch.layout, eps=cfg.adv_eps)
    tau = torch.where(
        adv > 0, torch.full_like(adv, cfg.tau_pos), torch.full_like(adv, cfg.tau_neg)
    )[:, None]
    ratio = safe_exp(batch.log_ratio)
    gate = torch.sigmoid(tau * (ratio - 1.0))
    loss = _seq_mean(batch, -(4.0 / tau) * gate * adv[:, None])
    with torch.no_grad():
        weight = 4.0 * gate * (1.0 - gate)  # d f / d rho: 1 on-policy
    metrics = _pg_metrics("sapo", loss, loss, _local_token_frac(batch, weight < 0.5), adv)
    return loss, metrics
