"""TensorRT-LLM engine on a GPU: grouped sampling, logprobs, and in-place refit verified.

Runs only with CUDA and TensorRT-LLM installed (``pytest -m gpu`` on a GPU node).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        importlib.util.find_spec("tensorrt_llm") is None, reason="needs TensorRT-LLM (extra gpu)"
    ),
]


def _tiny_llama_dir(tmp_path, seed):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=2,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    out = tmp_path / f"m{seed}"
    model.save_pretrained(out)
    return out, model


def test_trtllm_refit_makes_engine_logprobs_match_the_new_weights(tmp_path):
    from nemo_rence.refit import RefitConfig, Refitter
    from nemo_rence.rollout import SamplingParams
    from nemo_rence.rollout.trtllm_engine import TRTLLMConfig, TRTLLMEngine

    start_dir, _ = _tiny_llama_dir(tmp_path, 0)
    _, target = _tiny_llama_dir(tmp_path, 1)
    engine = TRTLLMEngine(TRTLLMConfig(model_dir=str(start_dir), colocate=False))
    prompts = [[5, 9, 11, 40], [8, 2, 17]]
    params = SamplingParams(n=4, max_new_tokens=16, seed=0, temperature=1.0)
    out = engine.generate(prompts, params)
    assert out.prompt_index == [0] * 4 + [1] * 4
    refitter = Refitter(RefitConfig(max_logprob_gap=0.05), engine)
    target = target.cuda()
    refitter.refit(((n, p.detach()) for n, p in target.named_parameters()), version=1)
    out = engine.generate(prompts, params)
    lp = torch.zeros(len(out), max(out.lengths))
    mask = torch.zeros_like(lp)
    with torch.no_grad():
        for i, (p, toks) in enumerate(zip(out.prompt_index, out.token_ids, strict=True)):
            ids = torch.tensor([prompts[p] + toks], device="cuda")
            logits = target(ids).logits[0, len(prompts[p]) - 1 : -1].float()
            lp[i, : len(toks)] = (
                torch.log_softmax(logits, -1)
                .gather(-1, torch.tensor(toks, device="cuda")[:, None])[:, 0]
                .cpu()
            )
            mask[i, : len(toks)] = 1
    gap = refitter.verify(out.logprobs, lp, mask)
    assert gap["refit/logprob_gap"] < 0.05
    engine.shutdown()
