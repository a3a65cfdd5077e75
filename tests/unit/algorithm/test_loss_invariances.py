"""Properties every loss must have: padding/masking invariance, exact micro-batch additivity with
the global normalisers, degenerate groups that add nothing (and no NaN), fp32 stability on
6,000-token responses."""

from __future__ import annotations

import pytest
import torch

from nemo_rence.algorithm import losses
from tests.unit.algorithm.loss_reference import CASES, Raw, case_id, groups_of, make_raw

torch.manual_seed(0)

DETERMINISTIC = [c for c in CASES if c[1].get("objective") != "random_pair"]


def _run(case, raw: Raw, lp: torch.Tensor, seed: int = 11, **kw):
    name, fields = case
    spec = losses.get(name)
    gen = torch.Generator().manual_seed(seed)
    return spec.fn(raw.to_batch(lp, generator=gen, **kw), spec.build_config(fields))


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_extra_padding_columns_with_nan_and_inf_garbage_change_nothing(case):
    raw = make_raw(21)
    lp = raw.lp.clone().requires_grad_(True)
    loss, _ = _run(case, raw, lp)
    (grad,) = torch.autograd.grad(loss, lp)

    n, t = raw.lp.shape
    extra = 5
    junk = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e30, -1e30])
    pad = junk.repeat(n, 1).to(raw.lp.dtype)
    wide = Raw(
        torch.cat([raw.lp, pad], 1),
        torch.cat([raw.old, pad.flip(1)], 1),
        torch.cat([raw.ref, pad], 1),
        torch.cat([raw.mask, torch.zeros(n, extra, dtype=torch.bool)], 1),
        raw.rewards,
        raw.group_ids,
        raw.kl_coef,
        raw.progress,
    )
    lp_wide = wide.lp.clone().requires_grad_(True)
    loss_wide, metrics = _run(case, wide, lp_wide)
    (grad_wide,) = torch.autograd.grad(loss_wide, lp_wide)

    torch.testing.assert_close(loss_wide, loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad_wide[:, :t], grad, rtol=1e-12, atol=1e-14)
    assert torch.all(grad_wide[:, t:] == 0)
    for key, value in metrics.items():
        assert torch.isfinite(torch.as_tensor(value)).all(), key


@pytest.mark.parametrize("case", DETERMINISTIC, ids=[case_id(c) for c in DETERMINISTIC])
def test_microbatches_of_whole_groups_sum_to_the_minibatch_loss_and_gradient(case):
    raw = make_raw(31, group_sizes=(3, 1, 4, 2, 5, 3, 2))
    lp = raw.lp.clone().requires_grad_(True)
    full, _ = _run(case, raw, lp)
    (grad_full,) = torch.autograd.grad(full, lp)

    groups = groups_of(raw)
    splits = [groups[:2], groups[2:5], groups[5:]]
    num_groups = len(groups)
    num_tokens = int(raw.mask.sum())
    lp_leaf = raw.lp.clone().requires_grad_(True)
    total = torch.zeros((), dtype=torch.float64)
    for part in splits:
        rows = sorted(i for g in part for i in g)
        sub = raw.select(rows)
        loss, _ = _run(
            case,
            sub,
            lp_leaf[torch.tensor(rows)],
            num_groups_global=num_groups,
            num_tokens_global=num_tokens,
        )
        total = total + loss
    (grad_sum,) = torch.autograd.grad(total, lp_leaf)
    torch.testing.assert_close(total, full, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad_sum, grad_full, rtol=1e-11, atol=1e-14)


# Cases whose degenerate groups contribute exactly nothing: no KL term acting on them, and no
# overlong shaping (which makes equal task rewards unequal by length).
NO_KL_ON_DEGENERATE = [
    c
    for c in DETERMINISTIC
    if c[0] != "disco" and not c[1].get("kl_beta") and not c[1].get("overlong_shaping")
] + [
    ("disco", {"penalty": 0.0}),
    ("disco", {"score": "l_ratio", "objective": "basic", "penalty": 0.0}),
]


def _with_degenerate_groups(seed: int) -> tuple[Raw, list[int]]:
    raw = make_raw(seed, group_sizes=(3, 4, 2, 5, 1, 3), kl_coef=0.0)
    groups = sorted(groups_of(raw), key=len)  # sizes 1, 2, 3, 3, 4, 5
    rewards = raw.rewards.clone()
    degenerate, contrastive = [groups[0], groups[2], groups[4]], [groups[1], groups[3], groups[5]]
    for g, value in zip(degenerate, (0.1, 1.0, 0.0), strict=True):
        rewards[g] = value  # all equal: degenerate
    for g in contrastive:  # one 1.0 and one 0.0 at least
        rewards[g[0]] = 1.0
        rewards[g[-1]] = 0.0
    raw.rewards = rewards
    degenerate_rows = sorted(i for g in degenerate for i in g)
    return raw, degenerate_rows


@pytest.mark.parametrize("case", NO_KL_ON_DEGENERATE, ids=[case_id(c) for c in NO_KL_ON_DEGENERATE])
def test_degenerate_groups_add_no_loss_no_gradient_and_no_nan(case):
    raw, degenerate = _with_degenerate_groups(41)
    lp = raw.lp.clone().requires_grad_(True)
    full, metrics = _run(case, raw, lp)
    (grad,) = torch.autograd.grad(full, lp)
    assert torch.isfinite(full) and torch.isfinite(grad).all()
    assert torch.all(grad[torch.tensor(degenerate)] == 0)

    keep = sorted(set(range(raw.lp.shape[0])) - set(degenerate))
    sub = raw.select(keep)
    loss_sub, _ = _run(
        case,
        sub,
        sub.lp.clone(),
        num_groups_global=len(groups_of(raw)),
        num_tokens_global=int(raw.mask.sum()),
    )
    torch.testing.assert_close(full, loss_sub, rtol=1e-12, atol=1e-14)
    counts = [v for k, v in metrics.items() if k.endswith("degenerate_groups")]
    assert all(int(c) == 3 for c in counts)


@pytest.mark.parametrize("case", NO_KL_ON_DEGENERATE, ids=[case_id(c) for c in NO_KL_ON_DEGENERATE])
def test_batch_of_only_degenerate_groups_gives_zero_loss_and_zero_gradient(case):
    raw = make_raw(42, kl_coef=0.0)
    raw.rewards = torch.full_like(raw.rewards, 0.1)
    lp = raw.lp.clone().requires_grad_(True)
    loss, metrics = _run(case, raw, lp)
    (grad,) = torch.autograd.grad(loss, lp)
    assert loss.item() == 0.0
    assert torch.all(grad == 0)
    for key, value in metrics.items():
        assert torch.isfinite(torch.as_tensor(value)).all(), key


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_fp32_is_stable_on_6000_token_responses(case):
    """Sequence log-probabilities ~ -9000: fp32 stays finite and matches fp64 closely."""
    raw = make_raw(51, group_sizes=(4, 3, 5), width=6000, spread=0.01)
    seq_logp = (raw.lp * raw.mask).sum(-1)
    assert seq_logp.min() < -3000  # the regime under test
    lp64 = raw.lp.clone().requires_grad_(True)
    loss64, _ = _run(case, raw, lp64)
    (g64,) = torch.autograd.grad(loss64, lp64)
    raw32 = Raw(
        raw.lp.float(),
        raw.old.float(),
        raw.ref.float(),
        raw.mask,
        raw.rewards.float(),
        raw.group_ids,
        raw.kl_coef,
        raw.progress,
    )
    lp32 = raw32.lp.clone().requires_grad_(True)
    loss32, _ = _run(case, raw32, lp32)
    (g32,) = torch.autograd.grad(loss32, lp32)
    assert loss32.dtype == torch.float32 and torch.isfinite(loss32) and torch.isfinite(g32).all()
    torch.testing.assert_close(loss32.double(), loss64, rtol=1e-4, atol=1e-6)
    scale = g64.abs().max().item()
    torch.testing.assert_close(g32.double(), g64, rtol=1e-3, atol=1e-4 * scale + 1e-12)


def test_bfloat16_inputs_are_computed_in_float32():
    raw = make_raw(61)
    lp = raw.lp.to(torch.bfloat16).requires_grad_(True)
    batch = raw.to_batch(lp, old_logprobs=raw.old.to(torch.bfloat16))
    loss, _ = losses.get("rence").fn(batch, losses.get("rence").config_cls())
    assert loss.dtype == torch.float32
    (grad,) = torch.autograd.grad(loss, lp)
    assert grad.dtype == torch.bfloat16 and torch.isfinite(grad.float()).all()
