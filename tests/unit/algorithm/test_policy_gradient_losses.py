"""Behaviour of the policy-gradient family beyond the brute-force match: advantages, overlong
shaping, clipping regimes, and the on-policy equivalences the papers state."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_rence.algorithm import losses
from nemo_rence.algorithm.losses import GroupLayout, LossBatch, overlong_penalty
from nemo_rence.algorithm.losses.batch import group_standardized_advantages

torch.manual_seed(0)


def test_group_advantages_use_population_std_and_zero_for_equal_rewards():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.1, 0.1, 0.1], dtype=torch.float64)
    layout = GroupLayout.from_group_ids(torch.tensor([5, 5, 5, 5, 2, 2, 2]))
    adv = group_standardized_advantages(rewards, layout, eps=0.0)
    std = math.sqrt(0.1875)  # population std of [1, 0, 0, 0]
    expected = torch.tensor(
        [0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std, 0, 0, 0], dtype=torch.float64
    )
    torch.testing.assert_close(adv, expected)
    centred = group_standardized_advantages(rewards, layout, scale=False)
    torch.testing.assert_close(
        centred[:4], torch.tensor([0.75, -0.25, -0.25, -0.25], dtype=torch.float64)
    )
    assert torch.all(centred[4:] == 0)


def test_group_layout_numbers_groups_by_first_appearance_with_slots_in_batch_order():
    layout = GroupLayout.from_group_ids(torch.tensor([7, 3, 7, 9, 3, 7]))
    assert layout.index.tolist() == [0, 1, 0, 2, 1, 0]
    assert layout.slot.tolist() == [0, 0, 1, 0, 1, 2]
    assert layout.sizes.tolist() == [3, 2, 1]
    assert (layout.num_groups, layout.width) == (3, 3)
    values = torch.arange(6.0)
    torch.testing.assert_close(layout.gather(layout.dense(values)), values)


@pytest.mark.parametrize(
    ("length", "expected"),
    [(0, 0.0), (6, 0.0), (7, -0.25), (8, -0.5), (10, -1.0), (11, -1.0), (500, -1.0)],
)
def test_overlong_penalty_is_dapo_eq_13(length, expected):
    # L_max = 10, L_cache = 4: free up to 6, linear to -1 at 10, -1 beyond
    out = overlong_penalty(torch.tensor([length]), max_len=10, cache_len=4)
    assert out.item() == pytest.approx(expected)


def test_overlong_penalty_rejects_a_buffer_not_inside_the_max_length():
    with pytest.raises(ValueError, match="cache_len"):
        overlong_penalty(torch.tensor([3]), max_len=4, cache_len=4)


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 3000), min_size=1, max_size=20),
    max_len=st.integers(2, 2048),
    frac=st.floats(0.01, 0.99),
)
def test_overlong_penalty_is_bounded_and_non_increasing_in_length(lengths, max_len, frac):
    cache = max(1, min(max_len - 1, int(frac * max_len)))
    ls = torch.tensor(sorted(lengths))
    out = overlong_penalty(ls, max_len, cache)
    assert torch.all(out <= 0) and torch.all(out >= -1)
    assert torch.all(out[1:] <= out[:-1])


def _batch(lp, old, rewards, group_ids, mask=None):
    mask = torch.ones_like(lp, dtype=torch.bool) if mask is None else mask
    return LossBatch(lp, old, mask, rewards, group_ids)


def _random_group(seed, n=6, t=5, spread=0.0):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=g, dtype=torch.float64) * 2 - 0.1
    lp = (old + spread * torch.randn(n, t, generator=g, dtype=torch.float64)).requires_grad_(True)
    rewards = torch.tensor([1.0, 0.0, 0.1, 1.0, 0.0, 0.0], dtype=torch.float64)[:n]
    lengths = torch.randint(1, t + 1, (n,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return lp, old, rewards, torch.zeros(n, dtype=torch.long), mask


def test_sapo_first_on_policy_step_equals_grpo():
    """SAPO's gate has slope 1 at rho = 1 (its 4/tau normalisation): the on-policy gradient is
    GRPO's, whatever the temperatures."""
    lp, old, r, gid, mask = _random_group(1)
    sapo, _ = losses.get("sapo").fn(
        _batch(lp, old, r, gid, mask), losses.get("sapo").build_config({"tau_neg": 3.0})
    )
    (g_sapo,) = torch.autograd.grad(sapo, lp)
    grpo, _ = losses.get("grpo")(_batch(lp, old, r, gid, mask))
    (g_grpo,) = torch.autograd.grad(grpo, lp)
    torch.testing.assert_close(g_sapo, g_grpo, rtol=1e-12, atol=1e-15)
    assert g_grpo.abs().sum() > 0


def test_gspo_and_gmpo_on_policy_gradient_is_the_length_normalised_policy_gradient():
    """At pi_theta = pi_old both sequence ratios are 1 with derivative 1/|o| per token."""
    lp, old, r, gid, mask = _random_group(2)
    adv = group_standardized_advantages(r, GroupLayout.from_group_ids(gid))
    lengths = mask.sum(-1).double()
    expected = -(adv / lengths / len(r))[:, None] * mask
    for name in ("gspo", "gmpo"):
        loss, _ = losses.get(name)(_batch(lp, old, r, gid, mask))
        (grad,) = torch.autograd.grad(loss, lp)
        torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-15)


def test_cispo_keeps_the_gradient_of_tokens_that_grpo_clips_away():
    lp, old, r, gid, mask = _random_group(3)
    with torch.no_grad():
        lp[0, 0] = old[0, 0] + math.log(2.0)  # rho = 2 on a positive (A > 0) token
    mask[0, 0] = True
    grpo, _ = losses.get("grpo")(_batch(lp, old, r, gid, mask))
    (g_grpo,) = torch.autograd.grad(grpo, lp)
    cispo, metrics = losses.get("cispo")(_batch(lp, old, r, gid, mask))
    (g_cispo,) = torch.autograd.grad(cispo, lp)
    assert g_grpo[0, 0] == 0
    assert g_cispo[0, 0] < 0  # descent raises the positive token's log-prob, weight 1 + eps_high
    adv0 = group_standardized_advantages(r, GroupLayout.from_group_ids(gid))[0]
    assert g_cispo[0, 0].item() == pytest.approx(-1.28 * adv0.item() / mask.sum().item())
    assert metrics["clip/frac"] > 0


def test_dapo_clip_higher_lets_positive_tokens_rise_further_than_grpo():
    lp, old, r, gid, mask = _random_group(4)
    with torch.no_grad():
        lp[0, 0] = old[0, 0] + math.log(1.25)  # inside DAPO's 1.28, outside GRPO's 1.2
    mask[0, 0] = True
    dapo, _ = losses.get("dapo")(_batch(lp, old, r, gid, mask))
    grpo, _ = losses.get("grpo")(_batch(lp, old, r, gid, mask))
    (g_dapo,) = torch.autograd.grad(dapo, lp)
    (g_grpo,) = torch.autograd.grad(grpo, lp)
    assert g_grpo[0, 0] == 0 and g_dapo[0, 0] < 0


def test_dapo_token_level_normalisation_weights_every_token_equally():
    """DAPO eq. 8 divides by the batch's token count: a token's gradient does not depend on
    the length of its own response (GRPO's does, through 1/|o_i|)."""
    lp, old, r, gid, mask = _random_group(5)
    dapo, _ = losses.get("dapo")(_batch(lp, old, r, gid, mask))
    (grad,) = torch.autograd.grad(dapo, lp)
    adv = group_standardized_advantages(r, GroupLayout.from_group_ids(gid), eps=1e-6)
    expected = -(adv[:, None] * mask) / mask.sum()
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-15)


def test_grpo_kl_term_needs_reference_logprobs():
    lp, old, r, gid, mask = _random_group(6)
    with pytest.raises(ValueError, match="ref_logprobs"):
        losses.get("grpo").fn(
            _batch(lp, old, r, gid, mask), losses.get("grpo").build_config({"kl_beta": 0.1})
        )


def test_disco_kl_penalty_is_zero_inside_the_trust_region_and_quadratic_outside():
    lp, old, r, gid, mask = _random_group(7, spread=0.0)
    spec = losses.get("disco")
    cfg = spec.build_config({"penalty": 10.0, "delta": 0.01})
    inside, m_in = spec.fn(_batch(lp, old, r, gid, mask), cfg)
    assert m_in["kl/k1"].item() == pytest.approx(0.0)
    assert m_in["disco/kl_violation_frac"].item() == 0.0
    shifted = (lp.detach() - 0.05).requires_grad_(True)  # KL(pi_old||pi_theta) k1 = 0.05 per token
    outside, m_out = spec.fn(_batch(shifted, old, r, gid, mask), cfg)
    assert m_out["kl/k1"].item() == pytest.approx(0.05)
    # the objective term only shifts by the constant -0.05 on every score, which cancels in J
    assert (outside - inside).item() == pytest.approx(10.0 * (0.05 - 0.01) ** 2, rel=1e-9)
