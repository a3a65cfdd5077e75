"""Train-step throughput of MegatronPolicy on CPU for a SmolLM2-135M-shaped model (random init).

One process (TP = PP = DP = 1, gloo), fp32, local layer spec. A batch of ``groups x K`` rollouts
with ``prompt`` + ``response`` tokens each; the loss is ReNCE (``algorithm.losses``, paper
defaults) through the policy's whole-group micro-batching. Reported: seconds and tokens/s of
``logprobs`` (forward only) and of ``train_step`` (forward + backward + AdamW), median of the
timed repetitions after one warm-up.

Layouts (``--layouts``): ``policy.layout`` rollout (one row per rollout) and shared_prefix (one row
per prompt holding its K responses; ``policy/megatron/packing.py``), side by side, with the ratio.

Peer in the same run: Hugging Face ``LlamaForCausalLM`` of the same shape and weights-free random
init, a full-vocabulary ``log_softmax`` + gather of the response tokens, the same ReNCE loss on
the sequence sums, backward and ``torch.optim.AdamW`` (what a TRL-style trainer does per step).

Usage: python bench/train_step.py [--groups 1] [--k 4] [--prompt 32] [--response 96] [--reps 2]
                                  [--dtype fp32|bf16]
Prints one JSON object. Threads: ``--threads`` intra-op threads, OMP_WAIT_POLICY=PASSIVE.
On a CUDA device (used whenever present) it also reports the peak allocated GPU memory and the
model FLOPs utilisation, MFU = 6 * N * tokens / (step seconds * peak FLOP/s) (N: parameters,
embedding counted once; attention FLOPs left out, so MFU is a lower bound), with the device's
dense peak from ``--peak-tflops`` or a table of known GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from nemo_rence.arch import ArchSpec
from nemo_rence.policy.interface import MicroBatch, PolicyBatch, algorithm_loss

SMOLLM2_135M = ArchSpec(
    model_type="llama",
    num_layers=30,
    hidden_size=576,
    num_attention_heads=9,
    num_query_groups=3,
    head_dim=64,
    ffn_hidden_size=1536,
    vocab_size=49152,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    rope_theta=100000.0,
    tie_word_embeddings=True,
)


def make_batch(groups: int, k: int, prompt: int, response: int) -> PolicyBatch:
    """``groups`` prompts x ``k`` rollouts; the rollouts of a prompt share its tokens."""
    g = torch.Generator().manual_seed(0)
    n = groups * k
    ids = torch.randint(0, SMOLLM2_135M.vocab_size, (n, prompt + response), generator=g)
    prompts = torch.randint(0, SMOLLM2_135M.vocab_size, (groups, prompt), generator=g)
    ids[:, :prompt] = prompts.repeat_interleave(k, dim=0)
    rewards = torch.tensor([1.0, 0.0] * (n // 2) + [0.1] * (n % 2))
    return PolicyBatch(
        ids,
        torch.full((n,), prompt),
        torch.full((n,), response),
        torch.arange(groups).repeat_interleave(k),
        extras={"rewards": rewards},
    )


PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "H800": 989.4, "A100": 312.0, "L40S": 362.1}
"""Dense bf16 peak TFLOP/s by GPU name (NVIDIA data sheets, without sparsity)."""


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, reps: int) -> float:
    fn()  # warm-up
    _sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_tflops(override: float | None) -> float | None:
    """The device's dense bf16 peak (``--peak-tflops`` first, then the table); None on CPU."""
    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def model_params(policy) -> int:
    return sum(p.numel() for p in policy.model.parameters())


def bench_policy(batch: PolicyBatch, reps: int, layout: str, dtype=torch.float32) -> dict:
    from nemo_rence.policy.megatron.parallel import init_parallel, teardown
    from nemo_rence.policy.megatron.policy import MegatronPolicy, MegatronPolicyConfig

    teardown()
    init_parallel(1, 1, seed=0)
    policy = MegatronPolicy(
        SMOLLM2_135M,
        MegatronPolicyConfig(
            micro_batch_size=batch.size, spec="local", layout=layout, params_dtype=dtype
        ),
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    lp = policy.logprobs(batch)
    batch.extras.old_logprobs = lp
    loss_fn = algorithm_loss("rence", {}, kl_coef=0.001)
    t_lp = _timed(lambda: policy.logprobs(batch), reps)
    t_step = _timed(lambda: policy.train_step(batch, loss_fn), reps)
    out = {"logprobs_s": t_lp, "train_step_s": t_step, "params": model_params(policy)}
    if torch.cuda.is_available():
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out


def bench_hf_peer(batch: PolicyBatch, reps: int) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    a = SMOLLM2_135M
    cfg = LlamaConfig(
        vocab_size=a.vocab_size,
        hidden_size=a.hidden_size,
        intermediate_size=a.ffn_hidden_size,
        num_hidden_layers=a.num_layers,
        num_attention_heads=a.num_attention_heads,
        num_key_value_heads=a.num_query_groups,
        max_position_embeddings=a.max_position_embeddings,
        rms_norm_eps=a.rms_norm_eps,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)
    p = int(batch.prompt_lengths[0])
    ids = batch.input_ids
    loss_fn = algorithm_loss("rence", {}, kl_coef=0.001)
    micro = MicroBatch(
        rows=torch.arange(batch.size),
        response_mask=batch.response_mask,
        group_ids=batch.group_ids,
        extras=batch.extras,
        num_groups_global=int(batch.group_ids.unique().numel()),
        num_tokens_global=batch.num_tokens(),
        num_micro_batches=1,
    )

    def logprobs() -> torch.Tensor:
        logits = model(ids).logits[:, p - 1 : -1].float()
        return torch.log_softmax(logits, -1).gather(2, ids[:, p:, None]).squeeze(2)

    def forward_only() -> None:
        with torch.no_grad():
            logprobs()

    def step() -> None:
        opt.zero_grad()
        loss, _ = loss_fn(logprobs(), micro)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return {"logprobs_s": _timed(forward_only, reps), "train_step_s": _timed(step, reps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--groups", type=int, default=1)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--response", type=int, default=96)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU")
    ap.add_argument(
        "--layouts",
        default="rollout,shared_prefix",
        help="comma list of policy.layout values to run (rollout: one row per rollout, "
        "shared_prefix: one row per prompt with its K responses, auto)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batch = make_batch(args.groups, args.k, args.prompt, args.response)
    tokens = int(batch.input_ids.numel())
    response_tokens = batch.num_tokens()
    out: dict = {
        "benchmark": "train_step",
        "model": "SmolLM2-135M shape (random init), megatron local spec, TP=PP=DP=1",
        "rollouts": batch.size,
        "tokens": tokens,
        "response_tokens": response_tokens,
        "threads": {
            "torch_intra_op": args.threads,
            "OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"],
        },
    }
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    out["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    out["dtype"] = args.dtype
    runs = {
        f"nemo_rence_{layout}": bench_policy(batch, args.reps, layout, dtype)
        for layout in args.layouts.split(",")
    }
    peak = peak_tflops(args.peak_tflops)
    for r in runs.values():
        if peak and "params" in r:
            # 6 N T: forward + backward of every parameter, per token of the batch
            r["mfu"] = round(6 * r["params"] * tokens / r["train_step_s"] / (peak * 1e12), 4)
    if not args.no_peer:
        runs["hf_transformers_peer"] = bench_hf_peer(batch, args.reps)
    for r in runs.values():
        r["logprobs_tokens_per_s"] = round(tokens / r["logprobs_s"], 1)
        r["train_step_tokens_per_s"] = round(tokens / r["train_step_s"], 1)
        r["logprobs_s"] = round(r["logprobs_s"], 3)
        r["train_step_s"] = round(r["train_step_s"], 3)
    out["results"] = runs
    if {"nemo_rence_rollout", "nemo_rence_shared_prefix"} <= runs.keys():
        plain, shared = runs["nemo_rence_rollout"], runs["nemo_rence_shared_prefix"]
        out["shared_prefix_speedup"] = {
            k: round(plain[k] / shared[k], 3) for k in ("logprobs_s", "train_step_s")
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
