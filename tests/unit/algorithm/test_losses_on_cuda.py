"""The losses run unchanged on a CUDA device and agree with CPU (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from nemo_rence.algorithm import losses
from tests.unit.algorithm.loss_reference import CASES, case_id, make_raw

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_loss_on_cuda_matches_cpu(case):
    name, fields = case
    spec = losses.get(name)
    cfg = spec.build_config(fields)
    raw = make_raw(3, dtype=torch.float32)
    results = []
    for device in ("cpu", "cuda"):
        lp = raw.lp.to(device).clone().requires_grad_(True)
        batch = losses.LossBatch(
            logprobs=lp,
            old_logprobs=raw.old.to(device),
            ref_logprobs=raw.ref.to(device),
            mask=raw.mask.to(device),
            rewards=raw.rewards.to(device),
            group_ids=raw.group_ids.to(device),
            kl_coef=raw.kl_coef,
            progress=raw.progress,
            generator=torch.Generator(device=device).manual_seed(0),
        )
        loss, metrics = spec.fn(batch, cfg)
        (grad,) = torch.autograd.grad(loss, lp)
        assert loss.device.type == device
        assert all(
            not isinstance(v, torch.Tensor) or v.device.type == device for v in metrics.values()
        )
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        results.append((loss.cpu(), grad.cpu()))
    if fields.get("objective") != "random_pair":  # the two devices' RNG streams differ
        torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-6)
