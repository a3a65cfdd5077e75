"""KL estimators against exact KL of small categorical distributions, and the KL controllers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nemo_rence.algorithm import kl

torch.manual_seed(0)


def _categoricals(seed: int, k: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.softmax(torch.randn(k, generator=g, dtype=torch.float64), 0)
    p = torch.softmax(torch.randn(k, generator=g, dtype=torch.float64), 0)
    return q, p


def _exact_kl(q: torch.Tensor, p: torch.Tensor) -> float:
    return float(sum(qi * math.log(qi / pi) for qi, pi in zip(q.tolist(), p.tolist(), strict=True)))


@pytest.mark.parametrize("name", ["k1", "k3"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unbiased_estimators_have_exact_expectation_kl_q_p(name, seed):
    """E_{x~q}[k(x)] summed exactly over the support equals KL(q || p) for k1 and k3."""
    q, p = _categoricals(seed)
    est = kl.get_estimator(name)(q.log(), p.log())
    assert float((q * est).sum()) == pytest.approx(_exact_kl(q, p), rel=1e-12)


@pytest.mark.parametrize("name", ["k1", "k2", "k3"])
def test_monte_carlo_estimates_match_exact_kl(name):
    q, p = _categoricals(7)
    gen = torch.Generator().manual_seed(3)
    x = torch.multinomial(q, 200_000, replacement=True, generator=gen)
    est = kl.get_estimator(name)(q.log()[x], p.log()[x])
    mean, sem = est.mean().item(), est.std().item() / math.sqrt(x.numel())
    exact = _exact_kl(q, p)
    if name == "k2":  # biased: only close when p ~ q; here check it is a sane positive number
        assert 0 < mean < 3 * exact
    else:
        assert abs(mean - exact) < 4 * sem


def test_k3_has_lower_variance_than_k1_when_distributions_are_close():
    g = torch.Generator().manual_seed(4)
    q = torch.softmax(torch.randn(8, generator=g, dtype=torch.float64), 0)
    p = torch.softmax(q.log() + 0.1 * torch.randn(8, generator=g, dtype=torch.float64), 0)
    x = torch.multinomial(q, 50_000, replacement=True, generator=g)
    var1 = kl.k1(q.log()[x], p.log()[x]).var()
    var3 = kl.k3(q.log()[x], p.log()[x]).var()
    assert var3 < 0.1 * var1


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-30, 30), min_size=1, max_size=30),
    st.lists(st.floats(-30, 30), min_size=1, max_size=30),
)
def test_k2_and_k3_are_never_negative(a, b):
    n = min(len(a), len(b))
    lq = torch.tensor(a[:n], dtype=torch.float64)
    lp = torch.tensor(b[:n], dtype=torch.float64)
    assert torch.all(kl.k3(lq, lp) >= 0)
    assert torch.all(kl.k2(lq, lp) >= 0)
    assert torch.all(kl.k3(lq.float(), lp.float()) >= 0)


def test_k3_is_rence_trust_region_formula_on_pi_old_samples():
    lp_old = torch.tensor([-1.0, -2.0, -0.5])
    lp_theta = torch.tensor([-1.1, -1.7, -0.5])
    d = lp_theta - lp_old
    torch.testing.assert_close(kl.k3(lp_old, lp_theta), torch.exp(d) - d - 1)


def test_unknown_estimator_lists_the_supported_ones():
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl.get_estimator("k4")


# ---- controllers ----------------------------------------------------------------------------------


def test_adaptive_controller_defaults_are_the_rence_paper_values():
    c = kl.build_controller("adaptive")
    assert (c.value, c.target, c.horizon) == (0.001, 0.01, 25600.0)


@pytest.mark.parametrize(
    ("current_kl", "error"),
    [(0.02, 0.2), (0.5, 0.2), (0.0, -0.2), (0.011, 0.1), (0.009, -0.1), (0.01, 0.0)],
)
def test_adaptive_controller_update_is_clipped_proportional(current_kl, error):
    c = kl.AdaptiveKLController(value=0.001, target=0.01, horizon=25600)
    n_steps = 4096
    new = c.update(current_kl, n_steps)
    assert new == pytest.approx(0.001 * (1 + error * n_steps / 25600), rel=1e-12)
    assert c.value == new


def test_adaptive_controller_compounds_over_iterations():
    c = kl.AdaptiveKLController(value=0.5, target=1.0, horizon=10)
    for _ in range(3):
        c.update(10.0, 5)  # error clipped to 0.2 -> x1.1 each time
    assert c.value == pytest.approx(0.5 * 1.1**3)


def test_controller_state_dict_round_trip_restores_the_coefficient():
    c = kl.AdaptiveKLController(value=0.002, target=0.02, horizon=100)
    c.update(0.05, 10)
    restored = kl.AdaptiveKLController()
    restored.load_state_dict(c.state_dict())
    assert restored == c
    assert restored.update(0.0, 10) == c.update(0.0, 10)
    f = kl.FixedKLController(0.3)
    f2 = kl.FixedKLController()
    f2.load_state_dict(f.state_dict())
    assert f2.value == 0.3 and f2.update(99.0, 1000) == 0.3


def test_controllers_are_chosen_by_name_and_validate_arguments():
    assert isinstance(kl.build_controller("fixed", init=0.1), kl.FixedKLController)
    assert kl.available_controllers() == ["adaptive", "fixed"]
    with pytest.raises(ValueError, match="adaptive, fixed"):
        kl.build_controller("pid")
    with pytest.raises(ValueError, match="target"):
        kl.build_controller("adaptive", target=0.0)
    with pytest.raises(ValueError, match="bad arguments"):
        kl.build_controller("fixed", horizon=3)
