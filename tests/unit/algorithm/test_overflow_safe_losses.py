"""Every registered loss stays finite, value and gradient, when one fp32 token has a log-ratio of
99 (pi_old = e^-100, pi_theta = e^-1): the exp of an unclamped ratio overflowed into inf losses
and NaN gradients (issue 17, defect 1; prime-rl #2972)."""

from __future__ import annotations

import pytest
import torch

from nemo_rence.algorithm import losses
from nemo_rence.algorithm.kl import k3

# every loss, plus the variants that exponentiate something of their own
CASES = [(name, {}) for name in losses.available()] + [
    ("grpo", {"kl_beta": 0.1}),
    ("disco", {"score": "l_ratio"}),
    ("disco", {"kl_estimator": "k3"}),
    ("rence", {"kl_estimator": "k3"}),
    ("cispo", {"eps_low": 0.2}),
]


def _batch(lp: torch.Tensor, huge_row: int) -> losses.LossBatch:
    old = torch.full((4, 3), -1.0)
    old[huge_row, 1] = -100.0  # log-ratio 99 at one token
    ref = old.clone()
    ref[huge_row, 2] = 98.0  # and a reference 99 nats above pi_theta (GRPO's KL term)
    return losses.LossBatch(
        logprobs=lp,
        old_logprobs=old,
        ref_logprobs=ref,
        mask=torch.ones(4, 3),
        rewards=torch.tensor([1.0, 0.0, 1.0, 0.0]),
        group_ids=torch.tensor([0, 0, 1, 1]),
        kl_coef=0.1,
        progress=0.5,
    )


@pytest.mark.parametrize("huge_row", [0, 1], ids=["positive_advantage", "negative_advantage"])
@pytest.mark.parametrize(("name", "fields"), CASES, ids=[f"{n}{sorted(f)}" for n, f in CASES])
def test_a_log_ratio_of_99_leaves_loss_and_gradient_finite(name, fields, huge_row):
    spec = losses.get(name)
    lp = torch.full((4, 3), -1.0, dtype=torch.float32, requires_grad=True)
    loss, metrics = spec(_batch(lp, huge_row), spec.build_config(fields))
    (grad,) = torch.autograd.grad(loss, lp)
    assert torch.isfinite(loss), f"{name}: loss {loss}"
    assert torch.isfinite(grad).all(), f"{name}: gradient {grad}"
    for key, value in metrics.items():
        assert torch.isfinite(torch.as_tensor(value)).all(), f"{name}: metric {key} = {value}"


def test_k3_is_schulmans_value_below_the_clamp_and_finite_above():
    d = torch.tensor([-5.0, 0.0, 3.0, 19.5, 99.0], requires_grad=True)
    out = k3(torch.zeros(5), d)
    exact = d.detach().exp() - d.detach() - 1
    torch.testing.assert_close(out[:4].detach(), exact[:4])
    assert torch.isfinite(out).all()
    (grad,) = torch.autograd.grad(out.sum(), d)
    assert torch.isfinite(grad).all() and grad[4] == 0
