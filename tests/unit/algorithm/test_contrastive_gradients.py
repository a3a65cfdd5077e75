"""Gradient identities of the contrastive losses (ReNCE eq. 1 and ConSPO Lemma 2, eqs. 12-14).

Score derivatives are read off the token gradients: every response token of rollout i gets
d loss / d lp_{i,t} = (d loss / d s_i) * (d s_i / d lp_{i,t}), with d s_i / d lp_{i,t} = beta for
ReNCE (sum of log-ratios) and 1/|o_i| for ConSPO (length-normalised log-likelihood).
"""

from __future__ import annotations

import math

import pytest
import torch

from nemo_rence.algorithm import losses
from nemo_rence.algorithm.losses import LossBatch
from nemo_rence.algorithm.losses.conspo import ConspoConfig, conspo_margin
from nemo_rence.algorithm.losses.rence import RenceConfig

torch.manual_seed(0)


def _one_group(rewards, lengths, seed=0, spread=0.4, width=None):
    """One prompt: rollouts with given rewards and response lengths, padded with garbage."""
    g = torch.Generator().manual_seed(seed)
    n = len(rewards)
    width = width or max(lengths) + 2
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    old = -2.0 * torch.rand(n, width, generator=g, dtype=torch.float64) - 0.05
    lp = old + spread * torch.randn(n, width, generator=g, dtype=torch.float64)
    lp = torch.where(mask, lp, torch.full_like(lp, 77.0))
    return dict(
        logprobs=lp.requires_grad_(True),
        old_logprobs=old,
        mask=mask,
        rewards=torch.tensor(rewards, dtype=torch.float64),
        group_ids=torch.zeros(n, dtype=torch.long),
    )


def _row_coefficients(grad, mask, scale):
    """Per-rollout d loss / d s from token gradients; asserts tokens of a row agree."""
    coefs = []
    for i in range(grad.shape[0]):
        row = grad[i][mask[i]] / scale[i]
        torch.testing.assert_close(row, row[0].expand_as(row), rtol=1e-10, atol=1e-14)
        coefs.append(row[0])
    return torch.stack(coefs)


# ---- ReNCE ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("margin", ["reward_scaled", "constant", "none"])
def test_rence_positive_coefficient_is_one_minus_p_over_num_positives(margin):
    rewards = [1.0, 0.0, 1.0, 0.1, 0.0, 1.0]
    f = _one_group(rewards, [3, 5, 2, 4, 1, 6], seed=1)
    cfg = RenceConfig(beta=0.3, alpha=0.5, margin=margin, use_kl=False)
    loss, metrics = losses.get("rence").fn(LossBatch(**f), cfg)
    (grad,) = torch.autograd.grad(loss, f["logprobs"])
    coef = _row_coefficients(grad, f["mask"], [cfg.beta] * len(rewards))

    # scores, written out from eq. (2) and (5)
    r = f["rewards"]
    seq = ((f["logprobs"] - f["old_logprobs"]) * f["mask"]).sum(-1).detach()
    m = {"reward_scaled": 1.0 - r, "constant": (r < 1).double(), "none": torch.zeros_like(r)}[
        margin
    ]
    s = cfg.beta * seq + cfg.alpha * m
    pos = [i for i in range(6) if rewards[i] == 1.0]
    neg = [j for j in range(6) if rewards[j] != 1.0]
    z_neg = sum(math.exp(s[j]) for j in neg)
    p_plus = {i: math.exp(s[i]) / (math.exp(s[i]) + z_neg) for i in pos}
    for i in pos:  # loss = -J: d loss / d s_i = -(1 - P_i^+) / |P|
        assert coef[i].item() == pytest.approx(-(1 - p_plus[i]) / len(pos), rel=1e-10)
    for j in neg:  # + (1/|P|) sum_i P_ij, proportional to exp(s_j)
        p_ij = sum(math.exp(s[j]) / (math.exp(s[i]) + z_neg) for i in pos) / len(pos)
        assert coef[j].item() == pytest.approx(p_ij, rel=1e-10)
    for j in neg:
        for k in neg:
            assert (coef[j] / coef[k]).item() == pytest.approx(math.exp(s[j] - s[k]), rel=1e-10)
    # group total is zero without the KL term
    assert coef.sum().item() == pytest.approx(0.0, abs=1e-13)
    assert metrics["rence/pos_prob"].item() == pytest.approx(sum(p_plus.values()) / len(pos))


def test_rence_group_total_is_not_zero_with_trust_region_kl():
    f = _one_group([1.0, 0.0, 0.0, 1.0], [3, 5, 2, 4], seed=2)
    loss, _ = losses.get("rence").fn(LossBatch(**f, kl_coef=0.5), RenceConfig(use_kl=True))
    (grad,) = torch.autograd.grad(loss, f["logprobs"])
    assert abs(grad.sum().item()) > 1e-6


def test_rence_on_policy_without_margin_gives_uniform_softmax_weights():
    """At pi_theta = pi_old every score is 0 (eq. 4): P+ = 1/(1+|N|), negatives weighted equally."""
    f = _one_group([1.0, 0.0, 0.1, 0.0, 1.0], [3, 5, 2, 4, 1], seed=3, spread=0.0)
    cfg = RenceConfig(beta=0.1, margin="none", use_kl=False)
    loss, metrics = losses.get("rence").fn(LossBatch(**f), cfg)
    (grad,) = torch.autograd.grad(loss, f["logprobs"])
    coef = _row_coefficients(grad, f["mask"], [cfg.beta] * 5)
    n_neg = 3
    assert metrics["rence/pos_prob"].item() == pytest.approx(1 / (1 + n_neg))
    assert loss.item() == pytest.approx(math.log(1 + n_neg))
    torch.testing.assert_close(
        coef[[1, 2, 3]], torch.full((3,), 2 * (1 / 4) / 2, dtype=torch.float64)
    )
    torch.testing.assert_close(coef[[0, 4]], torch.full((2,), -(3 / 4) / 2, dtype=torch.float64))


def test_rence_reward_scaled_margin_pushes_worse_negatives_down_harder_on_policy():
    """Sec. 3.4.1: "higher-quality negatives receive smaller margins, while lower-quality
    negatives receive larger margins and are pushed further from the positives".

    At pi_theta = pi_old, s = alpha * (r_max - r): the reward-0 negative has score 0.5, the
    reward-0.1 (boxed but wrong) negative 0.45, the positive 0. So the gradient is not uniform:
    the 0.1-reward negative gets a SMALLER push-down weight than the 0-reward one, by exactly
    exp(alpha * 0.1); and the positive gets a larger pull-up than without the margin.
    """
    f = _one_group([1.0, 0.1, 0.0, 0.0], [4, 4, 4, 4], seed=4, spread=0.0)
    cfg = RenceConfig(beta=0.1, alpha=0.5, use_kl=False)
    loss, _ = losses.get("rence").fn(LossBatch(**f), cfg)
    (grad,) = torch.autograd.grad(loss, f["logprobs"])
    coef = _row_coefficients(grad, f["mask"], [cfg.beta] * 4)
    assert coef[1] > 0 and coef[2] > 0  # gradient descent lowers both negatives' log-probs
    assert coef[2] > coef[1]  # the worse (reward 0) negative is pushed down harder
    assert (coef[2] / coef[1]).item() == pytest.approx(math.exp(0.5 * 0.1), rel=1e-12)
    torch.testing.assert_close(coef[2], coef[3])

    f0 = _one_group([1.0, 0.1, 0.0, 0.0], [4, 4, 4, 4], seed=4, spread=0.0)
    loss0, _ = losses.get("rence").fn(LossBatch(**f0), RenceConfig(margin="none", use_kl=False))
    (grad0,) = torch.autograd.grad(loss0, f0["logprobs"])
    coef0 = _row_coefficients(grad0, f0["mask"], [0.1] * 4)
    assert coef[0] < coef0[0] < 0  # margin strengthens the positive's update (-(1 - P+))


def test_rence_single_positive_is_cross_entropy_over_the_group():
    f = _one_group([0.0, 0.1, 1.0, 0.0, 0.1], [3, 2, 5, 4, 1], seed=5)
    cfg = RenceConfig(beta=0.2, alpha=0.5, use_kl=False)
    loss, _ = losses.get("rence").fn(LossBatch(**f), cfg)
    r = f["rewards"]
    seq = ((f["logprobs"] - f["old_logprobs"]) * f["mask"]).sum(-1)
    s = cfg.beta * seq + cfg.alpha * (1.0 - r)
    expected = torch.nn.functional.cross_entropy(s[None, :], torch.tensor([2]))
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)


# ---- ConSPO Lemma 2 -------------------------------------------------------------------------------


@pytest.mark.parametrize("progress", [0.0, 0.1, 0.9])
def test_conspo_score_derivatives_satisfy_lemma_2(progress):
    rewards = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    lengths = [3, 5, 2, 4, 1, 6, 3]
    f = _one_group(rewards, lengths, seed=6, spread=1.0)
    cfg = ConspoConfig(tau=0.7, margin_max=0.2, warmup=0.3)
    loss, _ = losses.get("conspo").fn(LossBatch(**f, progress=progress), cfg)
    (grad,) = torch.autograd.grad(-loss, f["logprobs"])  # J = -loss for a single prompt
    dj = _row_coefficients(grad, f["mask"], [1.0 / n for n in lengths])

    lp = f["logprobs"].detach()
    s = (lp * f["mask"]).sum(-1) / torch.tensor(lengths, dtype=torch.float64)
    m = conspo_margin(progress, cfg)
    tau = cfg.tau
    pos = [i for i, r in enumerate(rewards) if r == 1.0]
    neg = [j for j, r in enumerate(rewards) if r != 1.0]
    z = {i: math.exp((s[i] - m) / tau) + sum(math.exp(s[k] / tau) for k in neg) for i in pos}
    p_plus = {i: math.exp((s[i] - m) / tau) / z[i] for i in pos}
    p_neg = {(i, j): math.exp(s[j] / tau) / z[i] for i in pos for j in neg}
    n_pos = len(pos)
    for i in pos:  # eq. (12), positives
        assert dj[i].item() == pytest.approx((1 - p_plus[i]) / n_pos, rel=1e-10)
    for j in neg:  # eq. (12), negatives
        assert dj[j].item() == pytest.approx(-sum(p_neg[i, j] for i in pos) / n_pos, rel=1e-10)
    # eq. (13): aggregate negative derivative and zero group total
    assert dj[neg].sum().item() == pytest.approx(
        -sum(1 - p_plus[i] for i in pos) / n_pos, rel=1e-10
    )
    assert dj.sum().item() == pytest.approx(0.0, abs=1e-13)
    # eq. (14): ratio of negative derivatives = exp((s_j - s_k) / tau)
    for j in neg:
        for k in neg:
            assert (dj[j] / dj[k]).item() == pytest.approx(math.exp((s[j] - s[k]) / tau), rel=1e-10)


def test_conspo_margin_follows_cosine_schedule_of_eq_16():
    cfg = ConspoConfig(margin_max=0.01, warmup=0.3)
    assert conspo_margin(0.0, cfg) == 0.0
    assert conspo_margin(0.15, cfg) == pytest.approx(0.005)
    assert conspo_margin(0.3, cfg) == pytest.approx(0.01)
    assert conspo_margin(1.0, cfg) == pytest.approx(0.01)
    assert conspo_margin(0.05, cfg) == pytest.approx(0.005 * (1 - math.cos(math.pi / 6)))
    assert conspo_margin(0.5, ConspoConfig(margin_schedule="constant")) == 0.01
    assert conspo_margin(0.5, ConspoConfig(margin_schedule="none")) == 0.0


def test_conspo_margin_lowers_positive_probability_and_raises_loss():
    f = _one_group([1.0, 0.0, 0.0, 1.0], [3, 5, 2, 4], seed=7)
    cfg = ConspoConfig(tau=1.0, margin_max=0.5)
    early, m0 = losses.get("conspo").fn(LossBatch(**f, progress=0.0), cfg)
    late, m1 = losses.get("conspo").fn(LossBatch(**f, progress=1.0), cfg)
    assert late > early
    assert m1["conspo/pos_prob"] < m0["conspo/pos_prob"]
    assert m1["conspo/margin"] == pytest.approx(0.5)
