"""Every registered loss equals an independent loop-based float64 computation, value and gradient.

Inputs: ragged groups (sizes 1..5), rows shuffled so groups are not contiguous, right padding
filled with huge garbage logprobs, rewards in {0, 0.1, 1} (so some groups are degenerate).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_rence.algorithm import losses
from tests.unit.algorithm.loss_reference import CASES, REFERENCES, Raw, case_id, make_raw


def _reference(name: str, raw: Raw, lp: torch.Tensor, fields: dict, **kw) -> torch.Tensor:
    return REFERENCES[name](raw, lp, **fields, **kw)


def _draws(raw: Raw, seed: int) -> torch.Tensor:
    """The [G, K] uniforms random_pair draws from a generator seeded with ``seed``."""
    layout = raw.to_batch(raw.lp).layout
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((layout.num_groups, layout.width), generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_value_and_gradient_match_bruteforce_float64(case, seed):
    name, fields = case
    spec = losses.get(name)
    cfg = spec.build_config(fields)
    raw = make_raw(seed)

    lp = raw.lp.clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(123)
    loss, metrics = spec.fn(raw.to_batch(lp, generator=gen), cfg)
    (grad,) = torch.autograd.grad(loss, lp)

    lp_ref = raw.lp.clone().requires_grad_(True)
    extra = {"draws": _draws(raw, 123)} if fields.get("objective") == "random_pair" else {}
    expected = _reference(name, raw, lp_ref, fields, **extra)
    (grad_ref,) = torch.autograd.grad(expected, lp_ref)

    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-12)
    # padding columns never receive gradient, whatever garbage they hold
    assert torch.all(grad[~raw.mask] == 0)
    assert float(metrics["loss/total"]) == pytest.approx(loss.item(), rel=1e-12, abs=1e-12)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_loss_in_float32_matches_float64_reference(case):
    name, fields = case
    spec = losses.get(name)
    cfg = spec.build_config(fields)
    raw = make_raw(5)

    lp32 = raw.lp.float().clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(9)
    loss, _ = spec.fn(raw.to_batch(lp32, generator=gen), cfg)
    (grad,) = torch.autograd.grad(loss, lp32)
    assert loss.dtype == torch.float32

    lp_ref = raw.lp.clone().requires_grad_(True)
    extra = {"draws": _draws(raw, 9)} if fields.get("objective") == "random_pair" else {}
    expected = _reference(name, raw, lp_ref, fields, **extra)
    # fp32 inputs are the fp64 inputs rounded, so compare against fp32-rounded reference inputs
    raw32 = Raw(
        raw.lp.float().double(),
        raw.old.float().double(),
        raw.ref.float().double(),
        raw.mask,
        raw.rewards.float().double(),
        raw.group_ids,
        raw.kl_coef,
        raw.progress,
    )
    lp_ref32 = raw32.lp.clone().requires_grad_(True)
    expected32 = _reference(name, raw32, lp_ref32, fields, **extra)
    (grad_ref32,) = torch.autograd.grad(expected32, lp_ref32)
    torch.testing.assert_close(loss.double(), expected32, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(grad.double(), grad_ref32, rtol=2e-4, atol=1e-6)
    torch.testing.assert_close(expected, expected32, rtol=1e-3, atol=1e-3)


def test_semi_online_dpo_without_reference_uses_old_logprobs():
    raw = make_raw(3)
    lp = raw.lp.clone().requires_grad_(True)
    loss, _ = losses.get("semi_online_dpo")(raw.to_batch(lp, ref_logprobs=None))
    lp_ref = raw.lp.clone().requires_grad_(True)
    expected = REFERENCES["semi_online_dpo"](raw, lp_ref, use_ref=False)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)
    with_ref, _ = losses.get("semi_online_dpo")(raw.to_batch(raw.lp))
    assert not torch.isclose(with_ref, loss)


DETERMINISTIC_NAMES = sorted({name for name, fields in CASES})


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    width=st.integers(1, 7),
    seed=st.integers(0, 10_000),
    name=st.sampled_from(DETERMINISTIC_NAMES),
)
def test_any_ragged_group_structure_matches_bruteforce(sizes, width, seed, name):
    raw = make_raw(seed, group_sizes=tuple(sizes), width=width)
    spec = losses.get(name)
    lp = raw.lp.clone().requires_grad_(True)
    loss, _ = spec(raw.to_batch(lp))
    lp_ref = raw.lp.clone().requires_grad_(True)
    expected = REFERENCES[name](raw, lp_ref)
    # float64 cancellation leaves ~1e-11 absolute noise on near-zero losses; 1e-9 still catches
    # any formula error (those are O(1e-2) or larger).
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-9)
    if expected.requires_grad:
        (grad,) = torch.autograd.grad(loss, lp)
        (grad_ref,) = torch.autograd.grad(expected, lp_ref)
        torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", DETERMINISTIC_NAMES)
def test_permuting_rollouts_permutes_gradients_and_keeps_the_loss(name):
    raw = make_raw(77)
    lp = raw.lp.clone().requires_grad_(True)
    loss, _ = losses.get(name)(raw.to_batch(lp))
    (grad,) = torch.autograd.grad(loss, lp)
    perm = torch.randperm(raw.lp.shape[0], generator=torch.Generator().manual_seed(1))
    shuffled = raw.select(perm.tolist())
    lp_s = shuffled.lp.clone().requires_grad_(True)
    loss_s, _ = losses.get(name)(shuffled.to_batch(lp_s))
    (grad_s,) = torch.autograd.grad(loss_s, lp_s)
    torch.testing.assert_close(loss_s, loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad_s, grad[perm], rtol=1e-11, atol=1e-14)
