"""Refit streams weights in buckets into the engine and catches an engine that is out of sync."""

from __future__ import annotations

import pytest
import torch

from nemo_rence.refit import RefitConfig, RefitMismatchError, Refitter, logprob_gap
from nemo_rence.rollout import SamplingParams
from nemo_rence.rollout.hf_engine import HFEngine
from tests.helpers import sequence_logprobs, tiny_llama

EOS = 3
PROMPTS = [[5, 9, 11, 40, 7], [8, 2, 17]]


def perturb(model) -> None:
    """One optimizer step on a language-modelling loss: every weight moves a little."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.tensor([PROMPTS[0] * 3])
    model(ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad()


def export(model):
    return ((n, p.detach()) for n, p in model.named_parameters())


def test_after_refit_engine_logprobs_equal_the_policy_logprobs():
    policy, engine_model = tiny_llama(0), tiny_llama(0)
    perturb(policy)
    engine = HFEngine(engine_model, [EOS])
    refitter = Refitter(RefitConfig(bucket_bytes=4096), engine)
    report = refitter.refit(export(policy), version=1)
    n_bytes = sum(p.numel() * 4 for p in policy.parameters())
    assert report.bytes == n_bytes and report.version == engine.version == 1
    assert report.buckets > 1
    largest = max(p.numel() * 4 for p in policy.parameters())
    assert report.peak_bucket_bytes <= max(4096, largest)
    out = engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=8, seed=0, temperature=0.8))
    lp, mask = sequence_logprobs(policy, out, PROMPTS, 0.8)
    gap = refitter.verify(out.logprobs, lp, mask)
    assert gap["refit/logprob_gap_max"] < 1e-4
    assert gap["refit/token_mult_prob_error"] == pytest.approx(1.0, abs=1e-4)


def test_a_stale_engine_is_detected_by_verification():
    policy, engine_model = tiny_llama(0), tiny_llama(0)
    engine = HFEngine(engine_model, [EOS])
    refitter = Refitter(RefitConfig(max_logprob_gap=1e-3), engine)
    perturb(policy)  # the policy moved; the refit is skipped
    out = engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=8, seed=0))
    lp, mask = sequence_logprobs(policy, out, PROMPTS)
    with pytest.raises(RefitMismatchError, match="stale"):
        refitter.verify(out.logprobs, lp, mask)
    # With verification off the gap is still measured and reported, not ignored.
    report = Refitter(RefitConfig(max_logprob_gap=1e-3, verify=False), engine)
    assert report.verify(out.logprobs, lp, mask)["refit/logprob_gap"] > 1e-3


def test_casting_to_bfloat16_halves_the_bytes_and_shows_up_in_the_gap():
    policy, engine_model = tiny_llama(0), tiny_llama(1)
    engine = HFEngine(engine_model, [EOS])
    report = Refitter(RefitConfig(dtype="bfloat16"), engine).refit(export(policy), version=2)
    assert report.bytes == sum(p.numel() * 2 for p in policy.parameters())
    out = engine.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=6, seed=1))
    lp, mask = sequence_logprobs(policy, out, PROMPTS)
    gap = logprob_gap(out.logprobs, lp, mask)
    assert 0 < gap["refit/logprob_gap"] < 0.05


def test_engine_that_does_not_take_the_new_version_fails_loudly():
    class Forgetful(HFEngine):
        def update_weights(self, named_tensors, version):
            return super().update_weights(named_tensors, version=0)

    engine = Forgetful(tiny_llama(0), [EOS])
    with pytest.raises(RefitMismatchError, match="version 0 after a refit to 3"):
        Refitter(RefitConfig(), engine).refit(export(tiny_llama(1)), version=3)


def test_logprob_gap_on_hand_computed_values():
    gap = logprob_gap(
        [[-1.0, -2.0], [-0.5]],
        torch.tensor([[-1.5, -2.0], [-0.5, 9.0]]),
        torch.tensor([[1, 1], [1, 0]]),
    )
    assert gap["refit/logprob_gap"] == pytest.approx(0.5 / 3)
    assert gap["refit/logprob_gap_max"] == pytest.approx(0.5)
    assert gap["refit/token_mult_prob_error"] == pytest.approx((2 + torch.e**0.5) / 3)


@pytest.mark.parametrize(
    "kwargs, msg",
    [({"bucket_bytes": 0}, "refit.bucket_bytes"), ({"dtype": "fp8"}, "refit.dtype must be one of")],
)
def test_bad_refit_config_names_the_field(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        RefitConfig(**kwargs)


def test_nan_engine_logprobs_fail_verification():
    engine = HFEngine(tiny_llama(0), [EOS])
    with pytest.raises(RefitMismatchError, match="nan"):
        Refitter(RefitConfig(), engine).verify(
            [[float("nan"), -1.0]], torch.tensor([[-1.0, -1.0]]), torch.ones(1, 2)
        )


def test_a_sharing_engine_runs_on_the_policy_tensors_themselves():
    """share_weights: tensors that fit as they are become the engine's parameters (no copy), so
    the policy's next in-place optimizer step is what the engine samples from; tensors that do
    not fit (another dtype, non-contiguous) are copied as usual."""
    policy, engine_model = tiny_llama(0), tiny_llama(1)
    engine = HFEngine(engine_model, [EOS], share_weights=True)
    Refitter(RefitConfig(), engine).refit(export(policy), version=1)
    pairs = list(zip(policy.parameters(), engine_model.parameters(), strict=True))
    assert all(p.data_ptr() == e.data_ptr() for p, e in pairs)
    perturb(policy)  # in place: no refit needed to see it
    out = engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=8, seed=0, temperature=0.8))
    lp, mask = sequence_logprobs(policy, out, PROMPTS, 0.8)
    assert logprob_gap(out.logprobs, lp, mask)["refit/logprob_gap_max"] < 1e-4
    # a second refit of the same tensors keeps them shared and moves nothing
    assert engine.update_weights(export(policy), version=2) == 0
    assert all(p.data_ptr() == e.data_ptr() for p, e in pairs)

    other = HFEngine(tiny_llama(1), [EOS], share_weights=True)
    Refitter(RefitConfig(dtype="bfloat16"), other).refit(export(policy), version=1)
    assert all(e.dtype == torch.float32 for e in other.model.parameters())  # copied, cast back
    assert not any(
        p.data_ptr() == e.data_ptr()
        for p, e in zip(policy.parameters(), other.model.parameters(), strict=True)
    )
    name, weight = next((n, p) for n, p in policy.named_parameters() if p.dim() == 2)
    flipped = weight.detach().t().contiguous().t()  # same values, not contiguous
    assert other.update_weights([(name, flipped)], version=2) == weight.numel() * 4
    assert dict(other.model.named_parameters())[name].data_ptr() != flipped.data_ptr()
