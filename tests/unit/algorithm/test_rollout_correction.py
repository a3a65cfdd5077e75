"""Rollout mismatch correction (``algorithm.correction``): the weights of each mode against an
independent computation, every loss x every mode through the policy's ``AlgorithmLoss`` (values
unchanged, gradients re-weighted, masked rollouts dropped exactly), and a bandit whose expected
update is known in closed form: an engine that differs from pi_old biases the update, and the
correction removes the bias (issue 17, defect 3)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from nemo_rence.algorithm import losses
from nemo_rence.algorithm.correction import (
    MODES,
    CorrectionConfig,
    correction_weights,
    mismatch_metrics,
    reweight_gradient,
)
from nemo_rence.config import ConfigError, compose
from nemo_rence.policy.interface import MicroBatch, algorithm_loss

# a variant of every loss that reads each of its inputs (grpo's reference, disco's ratio score)
LOSSES = [(n, {}) for n in losses.available() if n != "dr_grpo"] + [
    ("dr_grpo", {"norm_len": 2}),
    ("grpo", {"kl_beta": 0.1}),
    ("disco", {"score": "l_ratio"}),
]


def _inputs():
    g = torch.Generator().manual_seed(3)
    n, t = 6, 4
    old = -torch.rand(n, t, generator=g, dtype=torch.float64) - 0.2
    engine = old + 0.4 * torch.randn(n, t, generator=g, dtype=torch.float64)
    mask = torch.ones(n, t)
    mask[2, 2:] = 0
    mask[5, 1:] = 0
    return old, engine, mask, torch.tensor([0, 0, 0, 1, 1, 1])


def _slow_weights(old, engine, mask, mode, cap, gids):
    """Loops over rollouts and tokens, straight from the module docstring's table."""
    n, t = old.shape
    w = torch.zeros(n, t, dtype=torch.float64)
    for i in range(n):
        toks = [j for j in range(t) if mask[i, j] > 0]
        rho_seq = math.exp(sum(float(old[i, j] - engine[i, j]) for j in toks))
        group = [k for k in range(n) if gids[k] == gids[i]]
        rho_grp = math.exp(
            sum(float(old[k, j] - engine[k, j]) for k in group for j in range(t) if mask[k, j] > 0)
        )
        for j in toks:
            rho = math.exp(float(old[i, j] - engine[i, j]))
            w[i, j] = {
                "none": 1.0,
                "token_tis": min(rho, cap),
                "seq_tis": min(rho_seq, cap),
                "token_mask": float(1 / cap <= rho <= cap),
                "seq_mask": float(1 / cap <= rho_seq <= cap),
                "group_tis": min(rho_grp, cap),
            }[mode]
    return w


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_weighs_tokens_as_its_formula_says(mode):
    old, engine, mask, gids = _inputs()
    got = correction_weights(old, engine, mask, CorrectionConfig(mode, 1.5), gids)
    torch.testing.assert_close(got, _slow_weights(old, engine, mask, mode, 1.5, gids))


def _micro(old, engine, mask, gids, rewards):
    extras = {
        "old_logprobs": old,
        "engine_logprobs": engine,
        "ref_logprobs": old - 0.1,
        "rewards": rewards,
    }
    return MicroBatch(
        rows=torch.arange(old.shape[0]),
        response_mask=mask,
        group_ids=gids,
        extras=extras,
        num_groups_global=2,
        num_tokens_global=int(mask.sum()),
        num_micro_batches=1,
    )


@pytest.mark.parametrize("mode", [m for m in MODES if m != "none"])
@pytest.mark.parametrize(("name", "fields"), LOSSES, ids=[f"{n}{sorted(f)}" for n, f in LOSSES])
def test_every_loss_accepts_every_mode_same_value_gradient_reweighted(name, fields, mode):
    old, engine, mask, gids = _inputs()
    rewards = torch.tensor([1.0, 0.0, 0.1, 0.0, 1.0, 0.0], dtype=torch.float64)
    mb = _micro(old, engine, mask, gids, rewards)
    lp0 = (old + 0.05 * torch.cos(torch.arange(old.numel()).view(old.shape))).detach()
    cfg = CorrectionConfig(mode, 1.5)

    def run(correction):
        lp = lp0.clone().requires_grad_(True)
        gen = torch.Generator().manual_seed(0)
        fn = algorithm_loss(name, fields, kl_coef=0.1, generator=gen, correction=correction)
        loss, _ = fn(lp, mb)
        (grad,) = torch.autograd.grad(loss, lp)
        return loss.detach(), grad

    plain_loss, plain_grad = run(None)
    loss, grad = run(cfg)
    w = _slow_weights(old, engine, mask, mode, 1.5, gids)
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=0)  # the value is the loss's own
    torch.testing.assert_close(grad, w * plain_grad, rtol=1e-12, atol=1e-15)
    if mode.endswith("mask"):  # out-of-range tokens / rollouts get exactly no gradient
        assert torch.all(grad[w == 0] == 0)


def test_a_correction_needs_the_engine_logprobs_in_the_batch():
    old, engine, mask, gids = _inputs()
    mb = _micro(old, engine, mask, gids, torch.zeros(6, dtype=torch.float64))
    mb.extras.engine_logprobs = None
    with pytest.raises(KeyError, match="engine_logprobs"):
        algorithm_loss("rence", correction=CorrectionConfig("seq_tis"))(old.clone(), mb)


def test_reweight_gradient_keeps_the_value_and_scales_the_gradient():
    lp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    out = reweight_gradient(lp, torch.tensor([[0.5, 0.0]]))
    assert torch.equal(out.detach(), lp.detach())
    (grad,) = torch.autograd.grad((out * torch.tensor([[3.0, 4.0]])).sum(), lp)
    assert grad.tolist() == [[1.5, 0.0]]


# ---- the bandit ---------------------------------------------------------------------------------
# pi_theta = softmax(theta) over R one-token "responses"; pi_old = pi_theta at theta0 (the update's
# first step); the engine samples from softmax(theta0 + delta). The exact expected update over
# groups of K rollouts is a finite sum over all R^K groups:
#     g(q, correction) = sum_{Y in R^K} prod_k q(y_k) * grad_theta L(Y, correction).
# The update the loss defines is g(pi_old, none); bias = |g(pi_eng, c) - g(pi_old, none)|.

R, K = 4, 3
THETA0 = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64)
DELTA = torch.tensor([0.5, -0.4, 0.0, 0.3], dtype=torch.float64)
REWARD = torch.tensor([1.0, 0.0, 0.1, 0.0], dtype=torch.float64)
GROUPS = torch.tensor(list(itertools.product(range(R), repeat=K)))  # [R^K, K]


def _expected_update(name, fields, engine_delta, correction):
    spec = losses.get(name)
    cfg = spec.build_config(fields)
    theta = THETA0.clone().requires_grad_(True)
    lp_all = torch.log_softmax(theta, -1)
    old_all = lp_all.detach()
    eng_all = torch.log_softmax(THETA0 + engine_delta, -1)
    n = GROUPS.shape[0]
    y = GROUPS.reshape(-1)
    lp, old, eng = lp_all[y][:, None], old_all[y][:, None], eng_all[y][:, None]
    gids = torch.arange(n).repeat_interleave(K)
    mask = torch.ones(n * K, 1)
    if correction is not None:
        lp = reweight_gradient(lp, correction_weights(old, eng, mask, correction, gids))
    # each group's probability under the engine: weight the group's loss by it
    p_group = eng_all.exp()[GROUPS].prod(-1)  # [n]
    total = torch.zeros((), dtype=torch.float64)
    for g in range(n):  # losses are sums over groups: one group at a time, weighted
        rows = slice(g * K, (g + 1) * K)
        batch = losses.LossBatch(
            logprobs=lp[rows],
            old_logprobs=old[rows],
            ref_logprobs=old[rows] - 0.2,
            mask=mask[rows],
            rewards=REWARD[GROUPS[g]],
            group_ids=gids[rows],
            kl_coef=0.1,
        )
        total = total + p_group[g] * spec(batch, cfg)[0]
    (grad,) = torch.autograd.grad(total, theta)
    return grad


BANDIT = [
    ("rence", {}),
    ("conspo", {}),
    ("semi_online_dpo", {}),
    ("disco", {}),
    ("grpo", {"kl_beta": 0.1}),
    ("dr_grpo", {"norm_len": 1}),
    ("gspo", {}),
]


@pytest.mark.parametrize(("name", "fields"), BANDIT, ids=[n for n, _ in BANDIT])
def test_bandit_engine_mismatch_biases_the_update_and_the_correction_removes_it(name, fields):
    target = _expected_update(name, fields, torch.zeros(R, dtype=torch.float64), None)
    assert target.norm() > 1e-3

    def bias(correction):
        return float((_expected_update(name, fields, DELTA, correction) - target).norm())

    uncorrected = bias(None)
    assert uncorrected > 0.1 * float(target.norm())  # the perturbed engine biases the update
    seq = [bias(CorrectionConfig("seq_tis", c)) for c in (1.1, 1.5, 2.0, 1e6)]
    assert all(b2 <= b1 + 1e-12 for b1, b2 in itertools.pairwise([uncorrected, *seq]))
    assert seq[-1] < 0.6 * uncorrected  # per-rollout IS: most of the bias, not the cross-terms
    group = [bias(CorrectionConfig("group_tis", c)) for c in (1.5, 1e6)]
    assert group[0] < uncorrected and group[1] < 1e-10  # the group's joint IS weight is exact


def test_bandit_masks_drop_exactly_the_out_of_range_rollouts():
    # ratios pi_old/pi_eng of the 4 responses; cap 1.3 keeps only those within [1/1.3, 1.3]
    old = torch.log_softmax(THETA0, -1)
    eng = torch.log_softmax(THETA0 + DELTA, -1)
    rho = (old - eng).exp()
    keep = (rho >= 1 / 1.3) & (rho <= 1.3)
    assert 0 < int(keep.sum()) < R  # some in range, some out
    cfg = CorrectionConfig("seq_mask", 1.3)
    y = GROUPS.reshape(-1)
    mask = torch.ones(y.numel(), 1)
    w = correction_weights(old[y][:, None], eng[y][:, None], mask, cfg)
    assert torch.equal(w[:, 0] > 0, keep[y])
    # the masked expected update equals the update with the dropped responses' logprobs detached
    got = _expected_update("rence", {}, DELTA, cfg)
    theta = THETA0.clone().requires_grad_(True)
    lp_all = torch.log_softmax(theta, -1)
    lp_all = torch.where(keep, lp_all, lp_all.detach())
    p_group = eng.exp()[GROUPS].prod(-1)
    spec = losses.get("rence")
    total = sum(
        p_group[g]
        * spec(
            losses.LossBatch(
                logprobs=lp_all[GROUPS[g]][:, None],
                old_logprobs=old[GROUPS[g]][:, None],
                mask=torch.ones(K, 1),
                rewards=REWARD[GROUPS[g]],
                group_ids=torch.zeros(K, dtype=torch.long),
                kl_coef=0.1,
            )
        )[0]
        for g in range(GROUPS.shape[0])
    )
    (expect,) = torch.autograd.grad(total, theta)
    torch.testing.assert_close(got, expect)


# ---- metrics and config -------------------------------------------------------------------------


def test_mismatch_metrics_measure_the_engine_policy_gap():
    old, engine, mask, _ = _inputs()
    assert mismatch_metrics(old, engine, mask, CorrectionConfig()) == {}
    m = mismatch_metrics(old, engine, mask, CorrectionConfig("token_mask", 1.5))
    on = mask > 0
    d = (old - engine)[on]
    assert m["mismatch/kl"] == pytest.approx(float((d.exp() - 1 - d).mean()))
    assert m["mismatch/token_mult_prob_error"] == pytest.approx(float(d.abs().exp().mean()))
    assert m["mismatch/masked_tokens"] == pytest.approx(
        float((d.abs() > math.log(1.5)).float().mean())
    )
    seq = m2 = mismatch_metrics(old, engine, mask, CorrectionConfig("seq_tis", 1.5))
    s = ((old - engine) * mask).sum(-1)
    assert seq["mismatch/truncated_seqs"] == pytest.approx(
        float((s > math.log(1.5)).float().mean())
    )
    assert m2["mismatch/seq_log_ratio_abs_max"] == pytest.approx(float(s.abs().max()))
    same = mismatch_metrics(old, old, mask, CorrectionConfig("seq_mask", 1.5))
    assert same["mismatch/kl"] == 0.0 and same["mismatch/masked_seqs"] == 0.0


def test_correction_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"rollout_correction.*mode must be one of"):
        compose(["model=tiny", "rollout.reuse_logprobs=false", "rollout_correction.mode=tis"])
    with pytest.raises(ConfigError, match=r"cap must be > 1"):
        compose(["model=tiny", "rollout.reuse_logprobs=false", "rollout_correction.cap=1"])
    with pytest.raises(ConfigError, match=r"rollout.reuse_logprobs=true"):
        compose(["model=tiny", "rollout.reuse_logprobs=true", "rollout_correction.mode=seq_tis"])
    cfg = compose(
        ["model=tiny", "rollout.reuse_logprobs=false", "rollout_correction.mode=seq_mask"]
    )
    assert cfg.rollout_correction == CorrectionConfig("seq_mask", 2.0)


def test_the_sequence_log_ratio_histogram_counts_every_rollout_in_its_bin():
    from nemo_rence.algorithm.correction import seq_log_ratio_histogram

    seq = torch.tensor([-5.0, -0.5, -0.05, 0.0, 0.005, 0.05, 0.5, 5.0, 1.0])
    hist = seq_log_ratio_histogram(seq)
    assert [hist[f"mismatch/seq_log_ratio_hist/{i}"] for i in range(7)] == [1, 1, 1, 2, 1, 1, 2]
