"""Rollout throughput with 1 vs 2 engine replicas on CPU (issue 15 item 3), through the trainer's
own replica path (:class:`nemo_rence.rollout.replicas.ReplicaPool`: broadcast the draw, each
replica generates its contiguous share with per-prompt seeds, gather to rank 0).

Each replica is one torchrun process pinned to its own core (``os.sched_setaffinity``) with
``torch.set_num_threads(1)``, so 2 replicas use 2 cores and 1 replica one. EOS is ignored, so
every rollout generates exactly ``--new-tokens`` tokens. Prints one JSON object: tokens/s of each,
the ratio, how many rollouts the 2-replica run reproduced token for token (per-prompt seeding),
and a scaling model for 8 GPUs.

    nice -n 5 python bench/rollout_replicas.py                 # SmolLM2-135M, 16 prompts x 8 x 32
    python bench/rollout_replicas.py --model tiny --prompts 8
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _worker(spec_path: str) -> None:
    """One rank: build the engine, run warm-up + measured draws through the ReplicaPool."""
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    os.sched_setaffinity(0, {spec["cores"][rank % len(spec["cores"])]})
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nemo_rence.rollout import SamplingParams
    from nemo_rence.rollout.hf_engine import HFEngine
    from nemo_rence.rollout.layout import engine_layout
    from nemo_rence.rollout.replicas import Draw, ReplicaPool, prompt_seeds

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo")
    hf_dir = Path(spec["hf_dir"])
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    engine = HFEngine(model, eos_token_ids=[], pad_token_id=0)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    texts = [f"What is {i} + {2 * i + 7}? Think step by step." for i in range(spec["prompts"])]
    prompt_ids = [list(tok.encode(t)) for t in texts]
    pool = ReplicaPool(
        engine_layout(world, policy_tp=1, policy_pp=1, engine="hf", engine_tp=1), rank
    )

    def generate(draw: Draw) -> list:
        out = engine.generate(draw.prompt_ids, draw.params, seeds=draw.seeds)
        k = draw.params.n
        return [out.token_ids[i * k : (i + 1) * k] for i in range(len(draw.prompts))]

    def one_draw(seed: int) -> tuple[float, list]:
        params = SamplingParams(
            n=spec["k"], temperature=1.0, max_new_tokens=spec["new_tokens"], seed=seed
        )
        draw = Draw(list(range(len(prompt_ids))), prompt_ids, params, prompt_seeds(seed, texts))
        start = time.perf_counter()
        groups = pool.run(draw, generate)
        pool.finish()
        return time.perf_counter() - start, groups

    if rank != 0:
        for _ in range(spec["warmup"] + spec["draws"]):
            pool.serve(generate)
    else:
        for w in range(spec["warmup"]):
            one_draw(1000 + w)
        times, rollouts = [], []
        for d in range(spec["draws"]):
            seconds, groups = one_draw(d)
            times.append(seconds)
            rollouts.append(groups)
        tokens = spec["prompts"] * spec["k"] * spec["new_tokens"]
        per_call = []  # the cost of per-prompt seeding: the same draws with one generator
        if world == 1:
            for d in range(spec["draws"]):
                params = SamplingParams(
                    n=spec["k"], temperature=1.0, max_new_tokens=spec["new_tokens"], seed=d
                )
                start = time.perf_counter()
                engine.generate(prompt_ids, params)
                per_call.append(time.perf_counter() - start)
        Path(spec["result"]).write_text(
            json.dumps(
                {
                    "seconds_per_draw": times,
                    "tokens_per_s": tokens / (sum(times) / len(times)),
                    "rollouts": rollouts,
                    "shares": pool.rollouts,
                    "per_call_tokens_per_s": tokens / (sum(per_call) / len(per_call))
                    if per_call
                    else None,
                }
            )
        )
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(n: int, spec: dict, work: Path) -> dict:
    spec = {**spec, "result": str(work / f"result-{n}.json")}
    spec_path = work / f"spec-{n}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        OMP_WAIT_POLICY="PASSIVE",
        PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={n}",
        "--master_addr=127.0.0.1",
        f"--master_port={_port()}",
        __file__,
        "--worker",
        str(spec_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{n} replica(s) failed:\n{proc.stdout[-3000:]}{proc.stderr[-5000:]}")
    return json.loads(Path(spec["result"]).read_text())


SCALING_MODEL = (
    "Each draw of the batch search is split into R contiguous shares of P/R prompts, generated "
    "concurrently, then gathered: t(R) = t_gen(P/R) + t_comm, so the speed-up is "
    "R * e(R) with e(R) = t_gen(P) / (R * t_gen(P/R) + R * t_comm). Rollout generation is "
    "embarrassingly parallel over prompts; what limits e(R) is (1) the largest share (shares "
    "differ by at most one prompt: with P=512 prompts on 8 replicas each generates 64), (2) the "
    "longest rollout of each share (a draw ends when its slowest replica does: with long-tailed "
    "response lengths the max over 8 shares of the per-share max grows slowly, a few percent for "
    "K=8 rollouts of 64 prompts each), (3) the batch efficiency an engine loses with a smaller "
    "batch (on a GPU, P*K/8 = 512 sequences per engine still saturate decoding of a 4-8B model, "
    "so this term is small; on this CPU it is what the measured ratio shows beyond the cores), "
    "and (4) the gather of token ids and logprobs (~8 bytes per token: 512 x 8 x 7k tokens = "
    "~230 MB per draw over NVLink/IB, well under a second) plus the broadcast of the prompts. "
    "For 8 GPUs with one TP-1 engine per GPU (the planner's 1n8g recipes) the model predicts "
    "~7-7.5x the rollout throughput of the single engine on rank 0 that the trainer built "
    "before (8 engines, e ~ 0.9); with TP-2 engines, 4 replicas of twice the per-engine speed. "
    "Colocated engines release their memory for the training step, so the 8 engines cost no "
    "training memory (planner: engine weights + KV only in the rollout phase)."
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.model == "smollm2":
            from nemo_rence.checkpoint.gguf import smollm2_hf_dir

            hf_dir = smollm2_hf_dir()
        else:
            from nemo_rence.tiny import write_tiny_hf_dir

            hf_dir = write_tiny_hf_dir(work / "tiny", layers=4, hidden=256)
        cores = sorted(os.sched_getaffinity(0))[:2]
        spec = {
            "hf_dir": str(hf_dir),
            "prompts": args.prompts,
            "k": args.k,
            "new_tokens": args.new_tokens,
            "draws": args.draws,
            "warmup": args.warmup,
            "cores": cores,
        }
        one, two = _run(1, spec, work), _run(2, spec, work)
    same = sum(
        a == b
        for d1, d2 in zip(one["rollouts"], two["rollouts"], strict=True)
        for g1, g2 in zip(d1, d2, strict=True)
        for a, b in zip(g1, g2, strict=True)
    )
    total = args.draws * args.prompts * args.k
    print(
        json.dumps(
            {
                "model": args.model,
                "prompts": args.prompts,
                "k": args.k,
                "new_tokens": args.new_tokens,
                "draws": args.draws,
                "cores": len(spec["cores"]),
                "tokens_per_s_1_replica": round(one["tokens_per_s"], 1),
                "tokens_per_s_2_replicas": round(two["tokens_per_s"], 1),
                "ratio": round(two["tokens_per_s"] / one["tokens_per_s"], 3),
                "tokens_per_s_1_replica_per_call_seed": round(one["per_call_tokens_per_s"], 1),
                "per_prompt_seed_cost": round(
                    one["per_call_tokens_per_s"] / one["tokens_per_s"] - 1, 4
                ),
                "seconds_per_draw_1": [round(t, 3) for t in one["seconds_per_draw"]],
                "seconds_per_draw_2": [round(t, 3) for t in two["seconds_per_draw"]],
                "rollouts_per_replica_2": two["shares"],
                "identical_rollouts_2_vs_1": f"{same}/{total}",
                "load_average": os.getloadavg(),
                "scaling_model_8_gpus": SCALING_MODEL,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
