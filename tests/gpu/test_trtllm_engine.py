"""TensorRT-LLM engine on a GPU: grouped sampling, logprobs, and in-place refit verified.

Runs only with CUDA and TensorRT-LLM installed (``pytest -m gpu`` on a GPU node).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tests.helpers import sequence_logprobs, tiny_llama

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        importlib.util.find_spec("tensorrt_llm") is None, reason="needs TensorRT-LLM (extra gpu)"
    ),
]


def _tiny_llama_dir(tmp_path, seed):
    model = tiny_llama(seed, vocab=512, hidden=128, heads=2, kv_heads=1, eos=2).to(torch.bfloat16)
    out = tmp_path / f"m{seed}"
    model.save_pretrained(out)
    return out, model


def test_trtllm_refit_makes_engine_logprobs_match_the_new_weights(tmp_path):
    from nemo_rence.refit import RefitConfig, Refitter
    from nemo_rence.rollout import SamplingParams
    from nemo_rence.rollout.trtllm_engine import TRTLLMConfig, TRTLLMEngine

    start_dir, _ = _tiny_llama_dir(tmp_path, 0)
    _, target = _tiny_llama_dir(tmp_path, 1)
    engine = TRTLLMEngine(
        TRTLLMConfig(
            model_dir=str(start_dir), eos_token_ids=(2,), colocate=False, skip_tokenizer_init=True
        )
    )
    prompts = [[5, 9, 11, 40], [8, 2, 17]]
    # T != 1: the engine's logprobs must be of softmax(logits / T) (LogprobMode.PROCESSED)
    params = SamplingParams(n=4, max_new_tokens=16, seed=0, temperature=0.7)
    out = engine.generate(prompts, params)
    assert out.prompt_index == [0] * 4 + [1] * 4
    refitter = Refitter(RefitConfig(max_logprob_gap=0.05), engine)
    target = target.cuda()
    refitter.refit(((n, p.detach()) for n, p in target.named_parameters()), version=1)
    out = engine.generate(prompts, params)
    lp, mask = sequence_logprobs(target, out, prompts, 0.7)
    gap = refitter.verify(out.logprobs, lp, mask)
    assert gap["refit/logprob_gap"] < 0.05
    engine.shutdown()
