"""Peak memory of token logprobs: our chunked vocab-parallel kernel vs a naive full log-softmax.

For each vocabulary (Qwen 151,936; SmolLM2 49,152) and each variant, a FRESH subprocess builds
random hidden states ``h`` [S, H] and an output weight ``W`` [V, H] (fp32), touches them, records
its resident-set high-water mark (``ru_maxrss``), then runs forward (+ backward) and reports the
increase of the high-water mark: the extra memory the computation needed at its peak.

    naive:  logp = log_softmax(h @ W^T / tau)[y]        (materialises [S, V] logits + log-softmax)
    ours:   vocab_parallel_token_logprobs(h, W, y)     (fp32 [C, V] blocks, C = auto chunk size)

Backward computes the gradients of ``sum(g * logp)`` w.r.t. ``h`` and ``W``; both variants then
hold a [V, H] weight gradient, which dominates our figure.

Usage: python bench/logprobs_memory.py [--seq 2048] [--hidden 896] [--device cpu|cuda]
                                      [--dtype fp32|bf16]      (prints one JSON object)
Threads: 1 intra-op thread, OMP_WAIT_POLICY=PASSIVE (recorded in the output). With
``--device cuda`` the tensors live on the GPU and the figure is the increase of
``torch.cuda.max_memory_allocated`` over the inputs (the same "extra memory at the peak").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

VOCABS = {"qwen2.5": 151_936, "smollm2": 49_152}


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_variant(
    variant: str,
    vocab: int,
    seq: int,
    hidden: int,
    backward: bool,
    device: str = "cpu",
    dtype_name: str = "fp32",
) -> dict:
    import torch

    from nemo_rence.policy.megatron.logprobs import auto_chunk_size, vocab_parallel_token_logprobs

    torch.set_num_threads(1)
    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    cuda = device == "cuda"
    g = torch.Generator(device=device).manual_seed(0)
    # In-place init: no temporaries, so the baseline high-water mark is the steady state.
    h = torch.empty(seq, hidden, device=device, dtype=dtype).normal_(generator=g)
    w = torch.empty(vocab, hidden, device=device, dtype=dtype).normal_(std=0.02, generator=g)
    h.requires_grad_(backward)
    w.requires_grad_(backward)
    labels = torch.randint(0, vocab, (seq,), generator=g, device=device)
    upstream = torch.randn(seq, generator=g, device=device)
    tau = 0.8
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.max_memory_allocated() if cuda else _maxrss_bytes()
    t0 = time.perf_counter()
    if variant == "naive":
        logp = torch.log_softmax((h @ w.t()) / tau, dim=-1).gather(1, labels[:, None]).squeeze(1)
    else:
        logp = vocab_parallel_token_logprobs(h, w, labels, temperature=tau)
    if backward:
        (logp.float() * upstream).sum().backward()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if cuda else _maxrss_bytes()) - before
    return {
        "variant": variant,
        "vocab": vocab,
        "peak_extra_mib": round(peak / 2**20, 1),
        "seconds": round(elapsed, 3),
        "chunk_tokens": auto_chunk_size(vocab) if variant == "ours" else seq,
        "checksum": float(logp.detach().float().sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=896)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--child", nargs=3, metavar=("VARIANT", "VOCAB", "BACKWARD"))
    args = ap.parse_args()
    if args.child:
        variant, vocab, backward = args.child
        row = run_variant(
            variant, int(vocab), args.seq, args.hidden, backward == "1", args.device, args.dtype
        )
        print(json.dumps(row))
        return

    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    results: dict = {
        "benchmark": "logprobs_memory",
        "seq": args.seq,
        "hidden": args.hidden,
        "dtype": args.dtype,
        "device": args.device,
        "temperature": 0.8,
        "threads": {"torch_intra_op": 1, "OMP_NUM_THREADS": 1, "OMP_WAIT_POLICY": "PASSIVE"},
        "measure": (
            "torch.cuda.max_memory_allocated increase"
            if args.device == "cuda"
            else "ru_maxrss increase"
        )
        + " in a fresh process per variant",
        "results": {},
    }
    for name, vocab in VOCABS.items():
        for mode, backward in (("forward", "0"), ("forward_backward", "1")):
            row = {}
            for variant in ("naive", "ours"):
                cmd = [
                    sys.executable,
                    __file__,
                    "--seq",
                    str(args.seq),
                    "--hidden",
                    str(args.hidden),
                    "--device",
                    args.device,
                    "--dtype",
                    args.dtype,
                ]
                out = subprocess.run(
                    [*cmd, "--child", variant, str(vocab), backward],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                row[variant] = json.loads(out.stdout.strip().splitlines()[-1])
            naive, ours = row["naive"], row["ours"]
            row["ours_over_naive"] = round(ours["peak_extra_mib"] / naive["peak_extra_mib"], 4)
            rel = 1e-3 if args.dtype == "fp32" else 2e-2  # bf16: ~3 significant digits
            row["same_logprobs"] = abs(ours["checksum"] - naive["checksum"]) <= rel * abs(
                naive["checksum"]
            )
            results["results"][f"{name}/{mode}"] = row
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
