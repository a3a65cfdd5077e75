"""Each registered loss declares its outputs (``LossSpec.outputs``): the metrics declared 'sum' add
up over micro-batches of whole groups to the mini-batch value, the trust-region KL is one of
them, and ``needs_reference`` says when ``ref_logprobs`` are read."""

from __future__ import annotations

import pytest
import torch

from nemo_rence.algorithm import losses
from nemo_rence.policy.interface import algorithm_loss, metric_reduction

CASES = [(n, {}) for n in losses.available()] + [
    ("grpo", {"kl_beta": 0.1}),
    ("rence", {"kl_estimator": "k1"}),
    ("rence", {"kl_estimator": "k2"}),
    ("disco", {"kl_estimator": "k3"}),
]


def _batch(rows=None, **kw):
    g = torch.Generator().manual_seed(0)
    n, t = 8, 5
    old = -torch.rand(n, t, generator=g) - 0.1
    lp = old + 0.3 * torch.randn(n, t, generator=g)
    ref = old + 0.2 * torch.randn(n, t, generator=g)
    mask = torch.ones(n, t)
    mask[1, 3:] = 0
    mask[6, 1:] = 0
    rewards = torch.tensor([1.0, 0.0, 0.1, 0.0, 0.0, 1.0, 1.0, 0.0])
    gids = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    idx = torch.arange(n) if rows is None else torch.tensor(rows)
    return losses.LossBatch(
        logprobs=lp[idx],
        old_logprobs=old[idx],
        ref_logprobs=ref[idx],
        mask=mask[idx],
        rewards=rewards[idx],
        group_ids=gids[idx],
        kl_coef=0.05,
        progress=0.5,
        **kw,
    )


@pytest.mark.parametrize(("name", "fields"), CASES, ids=[f"{n}{sorted(f)}" for n, f in CASES])
def test_declared_sum_metrics_add_up_over_micro_batches_of_whole_groups(name, fields):
    spec = losses.get(name)
    cfg = spec.build_config(fields)
    outputs = spec.outputs(cfg)
    full = _batch()
    n_tokens = float(full.token_mask.sum())
    _, whole = spec(full, cfg)
    parts = [
        spec(_batch(rows, num_groups_global=2, num_tokens_global=n_tokens), cfg)[1]
        for rows in ([0, 1, 2, 3], [4, 5, 6, 7])
    ]
    summed = [k for k in whole if outputs.reduction(k) == "sum"]
    assert {"loss/total"} <= set(summed) <= set(whole)
    assert outputs.summed <= set(whole), f"declared but never logged: {outputs.summed - set(whole)}"
    for key in summed:
        total = sum(float(p[key]) for p in parts)
        assert total == pytest.approx(float(whole[key]), rel=1e-5, abs=1e-7), key


@pytest.mark.parametrize(
    ("name", "fields", "kl"),
    [
        ("rence", {}, "kl/k3"),
        ("rence", {"kl_estimator": "k1"}, "kl/k1"),
        ("rence", {"kl_estimator": "k2", "use_kl": False}, "kl/k2"),
        ("disco", {}, "kl/k1"),
        ("grpo", {"kl_beta": 0.1}, None),  # kl/ref_k3 is a KL to the reference
        ("gspo", {}, None),
        ("conspo", {}, None),
        ("semi_online_dpo", {}, None),
    ],
)
def test_each_loss_declares_its_trust_region_kl(name, fields, kl):
    spec = losses.get(name)
    assert spec.outputs(spec.build_config(fields)).trust_region_kl == kl
    assert algorithm_loss(name, fields).trust_region_kl == kl


@pytest.mark.parametrize(
    ("name", "fields", "needs"),
    [
        ("grpo", {}, False),
        ("grpo", {"kl_beta": 0.001}, True),
        ("semi_online_dpo", {}, True),
        ("rence", {}, False),
        ("dapo", {}, False),
    ],
)
def test_losses_declare_when_they_need_a_reference_policy(name, fields, needs):
    spec = losses.get(name)
    assert spec.needs_reference(spec.build_config(fields)) is needs


def test_the_policy_reduces_metrics_as_the_loss_declares():
    loss = algorithm_loss("rence", {"kl_estimator": "k2"})
    assert metric_reduction(loss, "kl/k2") == "sum"
    assert metric_reduction(loss, "kl/coef") == "mean"
    assert metric_reduction(loss, "rence/pos_prob") == "mean"
    assert metric_reduction(lambda lp, mb: (lp.sum(), {}), "loss/total") == "mean"
    assert metric_reduction(lambda lp, mb: (lp.sum(), {}), "policy/loss") == "sum"
