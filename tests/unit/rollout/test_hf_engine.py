"""The hf engine: shared-prefill sampling that matches transformers, and in-place refit."""

from __future__ import annotations

import pytest
import torch

from nemo_rence.rollout import GenerationEngine, SamplingParams
from nemo_rence.rollout.hf_engine import HFEngine
from tests.helpers import sequence_logprobs, tiny_llama

EOS = 3
PROMPTS = [[5, 9, 11, 40, 7], [8, 2], [60, 61, 62]]


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


def test_engine_satisfies_the_generation_protocol(model):
    assert isinstance(HFEngine(model, [EOS]), GenerationEngine)


def test_greedy_rollouts_equal_transformers_generate_for_left_padded_prompts(model):
    engine = HFEngine(model, [EOS])
    out = engine.generate(PROMPTS, SamplingParams(n=2, temperature=0, max_new_tokens=12))
    for i, prompt in enumerate(PROMPTS):
        ref = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            do_sample=False,
            max_new_tokens=12,
            eos_token_id=EOS,
            pad_token_id=0,
        )[0, len(prompt) :].tolist()
        if EOS in ref:
            ref = ref[: ref.index(EOS) + 1]
        assert out.token_ids[2 * i] == ref
        assert out.token_ids[2 * i + 1] == ref  # the K copies of a greedy rollout agree


def test_rollouts_are_grouped_by_prompt_and_reproducible_with_a_seed(model):
    engine = HFEngine(model, [EOS])
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=10, seed=123)
    a = engine.generate(PROMPTS, params)
    b = engine.generate(PROMPTS, params)
    c = engine.generate(PROMPTS, SamplingParams(n=4, temperature=1.0, max_new_tokens=10, seed=7))
    assert a.prompt_index == [0] * 4 + [1] * 4 + [2] * 4
    assert a.token_ids == b.token_ids and a.logprobs == b.logprobs
    assert a.token_ids != c.token_ids
    assert len({tuple(t) for t in a.token_ids[:4]}) > 1  # samples differ within a group


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_rollout_logprobs_match_a_full_forward_recomputation(model, temperature):
    engine = HFEngine(model, [EOS])
    out = engine.generate(
        PROMPTS, SamplingParams(n=3, temperature=temperature, max_new_tokens=9, seed=1)
    )
    ref, _ = sequence_logprobs(model, out, PROMPTS, temperature)
    for row, toks in enumerate(out.token_ids):
        got = torch.tensor(out.logprobs[row])
        torch.testing.assert_close(got, ref[row, : len(toks)], atol=1e-4, rtol=0)


def test_max_length_and_stop_tokens_are_honoured(model):
    engine = HFEngine(model, [EOS])
    out = engine.generate(PROMPTS, SamplingParams(n=4, max_new_tokens=6, seed=0))
    for toks, reason in zip(out.token_ids, out.finish_reason, strict=True):
        assert len(toks) <= 6
        assert reason == ("eos" if toks[-1] == EOS else "length")
        assert EOS not in toks[:-1]
    # Every token the model can emit is a stop token: each response is exactly one token.
    stop_all = SamplingParams(n=2, max_new_tokens=6, seed=0, stop_token_ids=tuple(range(96)))
    out = engine.generate(PROMPTS, stop_all)
    assert all(len(t) == 1 for t in out.token_ids)
    assert set(out.finish_reason) <= {"stop", "eos"}


def test_sampling_draws_tokens_with_their_probabilities():
    from nemo_rence.rollout.hf_engine import sample_next

    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0, float("-inf")]]).expand(40_000, 5)
    params = SamplingParams(n=1, temperature=1.0)
    tokens, logprobs = sample_next(logits, params, torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens, minlength=5).double() / len(tokens)
    expected = torch.softmax(logits[0].double(), -1)
    assert freq[4] == 0  # a zero-probability token is never drawn
    assert (freq - expected).abs().max() < 0.01  # 5 sigma at n = 40,000
    torch.testing.assert_close(logprobs, expected.log().float()[tokens])


def test_top_k_one_is_greedy(model):
    engine = HFEngine(model, [EOS])
    greedy = engine.generate(PROMPTS, SamplingParams(n=1, temperature=0, max_new_tokens=8))
    topk = engine.generate(PROMPTS, SamplingParams(n=1, top_k=1, max_new_tokens=8, seed=5))
    assert greedy.token_ids == topk.token_ids


def test_update_weights_copies_in_place_and_changes_the_rollouts():
    engine_model, other = tiny_llama(seed=0), tiny_llama(seed=1)
    engine = HFEngine(engine_model, [EOS])
    params = SamplingParams(n=1, temperature=0, max_new_tokens=8)
    before_ptr = engine_model.model.embed_tokens.weight.data_ptr()
    moved = engine.update_weights(other.state_dict().items(), version=5)
    assert engine.version == 5 and moved > 0
    assert engine_model.model.embed_tokens.weight.data_ptr() == before_ptr  # in place
    assert (
        engine.generate(PROMPTS, params).token_ids
        == HFEngine(other, [EOS]).generate(PROMPTS, params).token_ids
    )
    with pytest.raises(KeyError, match=r"no_such\.weight"):
        engine.update_weights([("no_such.weight", torch.zeros(1))], version=6)
    with pytest.raises(ValueError, match=r"model\.norm\.weight"):
        engine.update_weights([("model.norm.weight", torch.zeros(3))], version=6)
