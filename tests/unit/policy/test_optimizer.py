"""CPU optimizer: global-norm clipping over megatron ``main_grad`` buffers, counted once."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nemo_rence.policy.megatron.optimizer import CpuAdamW, OptimizerSettings, global_grad_norm


def _param(values, grad, *, shared=False):
    p = nn.Parameter(torch.tensor(values))
    p.tensor_model_parallel = True  # a TP shard: counted on every rank
    p.main_grad = torch.tensor(grad)
    if shared:
        p.shared = True  # the last stage's copy of a tied embedding: not counted
    return p


def test_global_norm_counts_each_parameter_once():
    a = _param([[1.0, 2.0]], [[3.0, 0.0]])
    b = _param([0.0], [4.0])
    tied_copy = _param([[1.0, 2.0]], [[3.0, 0.0]], shared=True)
    assert global_grad_norm([a, b, tied_copy]) == pytest.approx(5.0)


@pytest.mark.parametrize(("clip", "scale"), [(1.0, 1.0 / 5.0), (10.0, 1.0), (0.0, 1.0)])
def test_step_clips_the_gradient_to_the_global_norm(clip, scale):
    a = _param([[1.0, 2.0]], [[3.0, 0.0]])
    b = _param([0.5], [4.0])
    opt = CpuAdamW([a, b], OptimizerSettings(lr=0.1, weight_decay=0.0, clip_grad=clip))
    norm = opt.step()
    assert norm == pytest.approx(5.0)
    # Adam's first moment after one step is (1 - beta1) * the (clipped) gradient.
    exp_avg = opt.optimizer.state[a]["exp_avg"]
    torch.testing.assert_close(
        exp_avg, 0.1 * torch.tensor([[3.0, 0.0]]) * scale, rtol=1e-5, atol=1e-7
    )
    assert a.grad is None and b.grad is None
    # clipped in place (no gradient-sized copy), as Megatron does
    torch.testing.assert_close(a.main_grad, torch.tensor([[3.0, 0.0]]) * scale)


def test_weight_decay_applies_to_matrices_only():
    w = _param([[1.0, 1.0]], [[0.0, 0.0]])
    bias = _param([1.0], [0.0])
    opt = CpuAdamW([w, bias], OptimizerSettings(lr=0.5, weight_decay=0.1, clip_grad=0.0))
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([[0.95, 0.95]]))
    torch.testing.assert_close(bias.detach(), torch.tensor([1.0]))


def test_non_finite_gradients_raise():
    a = _param([1.0], [math.inf])
    with pytest.raises(FloatingPointError, match="non-finite"):
        CpuAdamW([a], OptimizerSettings()).step()


def test_set_lr_applies_from_the_next_step():
    w = _param([1.0], [2.0])
    opt = CpuAdamW([w], OptimizerSettings(lr=0.5, weight_decay=0.0, clip_grad=0.0))
    opt.set_lr(0.1)
    opt.step()
    # Adam's first step moves by lr * m_hat / (sqrt(v_hat) + eps) = lr * sign(g)
    assert w.item() == pytest.approx(0.9, abs=1e-6)
