"""Rollout (engine-trainer) mismatch correction: a loss-independent part of every update.

The rollouts are SAMPLED by the engine, pi_eng, but every loss is written for samples of pi_old
(the policy's own weights at the start of the iteration). On GPU a bf16 engine with its own
kernels always differs from the Megatron policy, and a sequence-level loss sums the gap over
every token. The correction re-weights the update by importance ratios between the two
(Shape legend as in ``losses/batch.py``: N rollouts, T response columns)::

    rho_t = pi_old(y_t) / pi_eng(y_t) = exp(lp_old_t - lp_eng_t)        token ratio      [N, T]
    rho_i = prod_t rho_t = exp(sum_t (lp_old_t - lp_eng_t))             sequence ratio   [N]

Modes (``CorrectionConfig.mode``), with the cap C > 1 (``cap``)::

    none         w = 1                                                  (the default)
    token_tis    w_t = min(rho_t, C)                         truncated IS per token (TIS)
    seq_tis      w_t = min(rho_i, C)  for every token of y_i    truncated IS per sequence
    token_mask   w_t = 1[1/C <= rho_t <= C]                  IcePop, two-sided, per token
    seq_mask     w_t = 1[1/C <= rho_i <= C]  for every token of y_i   ... per sequence
    group_tis    w_t = min(prod_{i in g} rho_i, C)  for every token of group g   (exact, below)

How the weights enter: loss-independent, through the policy logprobs the loss receives::

    lp'_t = w_t * lp_t + (1 - w_t) * sg(lp_t)

so every loss value is unchanged and the gradient of any loss L becomes
``sum_{i,t} w_{i,t} (dL / d lp_{i,t}) grad lp_{i,t}``: each token's (or rollout's) term of the
update is re-weighted by its ratio, masked terms (w = 0) give no gradient at all.

* Token-level losses (GRPO, DAPO, Dr. GRPO, CISPO, SAPO: L = sum_{i,t} l_{i,t} / norm with l_{i,t}
  a function of lp_{i,t}): the gradient is exactly that of sum_{i,t} w_{i,t} l_{i,t} / norm, i.e.
  verl's / NeMo-RL's TIS (``pg_loss * is_weight``) and IcePop's token mask. Untruncated, with the
  advantages held fixed, E_{y ~ pi_eng}[w grad l] = E_{y ~ pi_old}[grad l]: unbiased.
* Sequence-level and sequence-contrastive losses (GSPO, GMPO, ReNCE, ConSPO, semi-online DPO,
  DisCO): with a sequence mode every token of y_i carries w_i, so the gradient is
  ``sum_i w_i (dL / ds_i) grad s_i`` with s_i the rollout's score (ReNCE eq. 2: beta sum_t log
  pi_theta/pi_old + alpha m; ConSPO: the length-normalised log-likelihood; DPO: beta sum_t
  log pi_theta/pi_ref). In ReNCE eq. (1) the positives y+ of P(x) and the negatives of N(x) are
  samples of pi_eng instead of pi_old: the positive term of y+ (its -log softmax) and the pull of
  each negative y- through the partition sum are each re-weighted by that rollout's own ratio
  w_i, which is the importance-sampling estimate of the pi_old expectation of each rollout's
  term; a masked rollout (seq_mask) still sits in its group's softmax (its value) but is never
  pushed (no gradient). What this does NOT re-weight are the cross-terms of a listwise loss
  (the other rollouts in y+'s denominator, GRPO's group baseline): those stay sample estimates
  from pi_eng, a bias of second order in the mismatch that no per-rollout weight removes.
  A token mode on a sequence-level loss weights each token of the sequence separately (the
  sequence's gradient sum_t grad lp_t becomes sum_t w_t grad lp_t).
* ``group_tis``: every loss here is a sum over groups of a term L_g that depends on its own
  group's K rollouts only, and the K rollouts are drawn jointly, so the exact importance weight
  of the group is W_g = prod_{i in g} rho_i; scaling all of the group's gradient by it gives
  E_{pi_eng}[W_g grad L_g] = E_{pi_old}[grad L_g] exactly (cross-terms included) when
  untruncated. The price is variance: the product of K sequence ratios; truncation at C
  trades it for bias. The bandit test (``tests/unit/algorithm/test_rollout_correction.py``)
  measures both: per-rollout seq_tis removes most of the bias and plateaus at the cross-term
  residual as C grows; group_tis goes to zero.

Metrics (:func:`mismatch_metrics`, every iteration when a mode is set): ``mismatch/kl`` =
KL(pi_eng || pi_old) on the sampled tokens (k3, token mean), ``mismatch/token_mult_prob_error``
= token mean of exp(|lp_old - lp_eng|), ``mismatch/seq_log_ratio_mean`` / ``_abs_max`` (sum_t of
log rho_t), and the shares ``mismatch/truncated_tokens`` / ``truncated_seqs`` (TIS: rho > C) or
``mismatch/masked_tokens`` / ``masked_seqs`` (masks: rho outside [1/C, C]) of the tokens and
sequences whose weight the mode changed (token modes: a sequence with any such token).

Pure tensor code: no torch.distributed (metrics are of this rank's batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nemo_rence.algorithm.kl import k3

__all__ = [
    "MODES",
    "CorrectionConfig",
    "correction_weights",
    "mismatch_metrics",
    "reweight_gradient",
]

MODES = ("none", "token_tis", "seq_tis", "token_mask", "seq_mask", "group_tis")

_LOG_CLAMP = 80.0  # |log rho| bound before exp: fp32-safe, far beyond any cap


@dataclass
class CorrectionConfig:
    """Rollout mismatch correction (module docstring): the config's ``rollout_correction``.

    Attributes:
        mode: 'none' (default: the CPU ``hf`` engine equals the policy to ~1e-6), 'token_tis',
            'seq_tis', 'token_mask', 'seq_mask' or 'group_tis'.
        cap: C > 1. TIS truncates the weight at C; the masks keep ratios in [1/C, C]. The
            sequence ratio is a product over the response's tokens: choose C for whole
            sequences (e.g. 2-10), the token ratio's C closer to 1 (e.g. 1.5-2).
    """

    mode: str = "none"
    cap: float = 2.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if not self.cap > 1.0:
            raise ValueError(f"cap must be > 1, got {self.cap!r}")

    @property
    def enabled(self) -> bool:
        return self.mode != "none"


def _ratios(old: Tensor, engine: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(token log-ratio [N, T] (0 on padding), sequence log-ratio [N]), log pi_old - log pi_eng."""
    m = mask > 0
    d = torch.where(m, old.detach().double() - engine.detach().double(), torch.zeros(()).double())
    return d, d.sum(-1)


def correction_weights(
    old_logprobs: Tensor,
    engine_logprobs: Tensor,
    mask: Tensor,
    cfg: CorrectionConfig,
    group_ids: Tensor | None = None,
) -> Tensor:
    """Per-token weights w [N, T] of ``cfg.mode`` (module docstring); 0 on padding, no grad.

    Args:
        old_logprobs: [N, T] log pi_old of the sampled tokens.
        engine_logprobs: [N, T] log pi_eng of the same tokens (the engine's sampling logprobs).
        mask: [N, T] response mask.
        cfg: the mode and cap.
        group_ids: [N] prompt ids (``group_tis`` only; the batch must hold whole groups).
    Returns:
        [N, T] weights in the dtype of ``old_logprobs`` (float32 at least).
    """
    d, seq = _ratios(old_logprobs, engine_logprobs, mask)
    m = (mask > 0).to(d.dtype)
    log_c = torch.log(torch.tensor(cfg.cap, dtype=d.dtype))
    if cfg.mode == "none":
        w = torch.ones_like(d)
    elif cfg.mode == "token_tis":
        w = d.clamp(-_LOG_CLAMP, _LOG_CLAMP).exp().clamp(max=cfg.cap)
    elif cfg.mode == "seq_tis":
        w = seq.clamp(-_LOG_CLAMP, _LOG_CLAMP).exp().clamp(max=cfg.cap)[:, None].expand_as(d)
    elif cfg.mode == "group_tis":
        if group_ids is None:
            raise ValueError("rollout correction 'group_tis' needs the rollouts' group_ids")
        _, index = torch.unique(group_ids, return_inverse=True)
        group = seq.new_zeros(int(index.max()) + 1 if index.numel() else 0)
        group = group.index_add(0, index, seq)[index]  # [N] log prod over the rollout's group
        w = group.clamp(-_LOG_CLAMP, _LOG_CLAMP).exp().clamp(max=cfg.cap)[:, None].expand_as(d)
    elif cfg.mode == "token_mask":
        w = (d.abs() <= log_c).to(d.dtype)
    else:  # seq_mask
        w = (seq.abs() <= log_c).to(d.dtype)[:, None].expand_as(d)
    dtype = torch.promote_types(old_logprobs.dtype, torch.float32)
    return (w * m).to(dtype)


def reweight_gradient(logprobs: Tensor, weights: Tensor) -> Tensor:
    """``sg(lp) + w * (lp - sg(lp))``: exactly the value of ``logprobs`` (bit for bit), its
    gradient scaled by ``w`` (the module docstring's ``w lp + (1 - w) sg(lp)``).

    Args:
        logprobs: [N, T] log pi_theta (requires grad).
        weights: [N, T] correction weights (no grad).
    """
    w = weights.detach().to(logprobs.dtype)
    base = logprobs.detach()
    return base + w * (logprobs - base)


def mismatch_metrics(
    old_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor, cfg: CorrectionConfig
) -> dict[str, float]:
    """The engine-policy mismatch of a batch and what the correction did to it (module docstring).

    Returns {} when ``cfg.mode`` is 'none' (nothing is corrected, nothing logged).
    """
    if not cfg.enabled:
        return {}
    d, seq = _ratios(old_logprobs, engine_logprobs, mask)
    m = mask > 0
    n_tok = max(int(m.sum()), 1)
    n_seq = max(int(m.any(-1).sum()), 1)
    has = m.any(-1)
    # KL(pi_eng || pi_old) from pi_eng's samples: q = engine, p = old, log p/q = d.
    kl = k3(torch.zeros_like(d), d)
    out = {
        "mismatch/kl": float((kl * m).sum()) / n_tok,
        "mismatch/token_mult_prob_error": float((d.abs().exp() * m).sum()) / n_tok,
        "mismatch/seq_log_ratio_mean": float(seq[has].mean()) if bool(has.any()) else 0.0,
        "mismatch/seq_log_ratio_abs_max": float(seq.abs().max()) if seq.numel() else 0.0,
    }
    log_c = float(torch.log(torch.tensor(cfg.cap, dtype=torch.float64)))
    kind = "truncated" if cfg.mode.endswith("tis") else "masked"
    tok = ((d > log_c) if kind == "truncated" else (d.abs() > log_c)) & m
    if cfg.mode.startswith(
        ("seq", "group")
    ):  # group_tis: reports the sequence ratios  # the sequence's own ratio decides, for all its tokens
        hit = ((seq > log_c) if kind == "truncated" else (seq.abs() > log_c)) & has
        tok = hit[:, None] & m
    else:  # a sequence counts when any of its tokens was corrected
        hit = tok.any(-1)
    out[f"mismatch/{kind}_tokens"] = float(tok.sum()) / n_tok
    out[f"mismatch/{kind}_seqs"] = float(hit.sum()) / n_seq
    out.update(seq_log_ratio_histogram(seq[has]))
    return out


SEQ_LOG_RATIO_BINS = (-1.0, -0.1, -0.01, 0.01, 0.1, 1.0)
"""Inner edges of the histogram of sequence log-ratios log(pi_old / pi_eng)(y|x): 7 bins."""


def seq_log_ratio_histogram(seq: Tensor) -> dict[str, float]:
    """Rollouts per bin of :data:`SEQ_LOG_RATIO_BINS` as ``mismatch/seq_log_ratio_hist/<i>``
    (bin i holds ``edges[i-1] <= x < edges[i]``, with -inf and +inf at the ends)."""
    edges = torch.tensor(SEQ_LOG_RATIO_BINS, dtype=seq.dtype)
    bins = torch.bucketize(seq.detach().cpu(), edges, right=True)
    counts = torch.bincount(bins, minlength=len(SEQ_LOG_RATIO_BINS) + 1)
    return {f"mismatch/seq_log_ratio_hist/{i}": float(c) for i, c in enumerate(counts.tolist())}
