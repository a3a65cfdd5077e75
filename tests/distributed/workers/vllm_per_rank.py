"""Worker (torchrun, 2 ranks, gloo): each trainer rank starts its OWN vLLM engine process.

Rank r writes tiny models (start: seed 0, target: seed 1), initialises the trainer's world and
megatron's groups exactly as ``nemo-rence train`` does, starts a VLLMEngine, checks that the
engine process sees none of the launcher's variables and that the trainer's world still works
(an all-reduce after the engine started), refits the engine to the target weights and measures
the logprob gap against the target HF model. Rank 0 prints ``RESULT {json}``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import torch
import torch.distributed as dist

from nemo_rence.policy.megatron.parallel import init_parallel, teardown
from nemo_rence.refit import RefitConfig, Refitter
from nemo_rence.rollout import SamplingParams
from nemo_rence.rollout.vllm_engine import VLLMConfig, VLLMEngine
from tests.helpers import sequence_logprobs, tiny_llama

PROMPTS = [[5, 9, 11, 40, 7], [8, 12, 17]]


def main() -> None:
    rank = int(os.environ["RANK"])
    root = Path(tempfile.mkdtemp(prefix=f"vllm-rank{rank}-"))
    start = tiny_llama(0, vocab=256, hidden=128, heads=2, kv_heads=1, eos=2)
    target = tiny_llama(1, vocab=256, hidden=128, heads=2, kv_heads=1, eos=2)
    # before the process group: transformers' save_pretrained writes on the main process only
    start.save_pretrained(root / "start")
    info = init_parallel(1, 1)
    assert info.rank == rank
    engine = VLLMEngine(
        VLLMConfig(
            model_dir=str(root / "start"),
            dtype="float32",
            max_model_len=64,
            skip_tokenizer_init=True,
            kv_cache_memory_bytes=32 * 2**20,
            weights_dir=str(root),
            env={"VLLM_CPU_OMP_THREADS_BIND": "nobind"},
        )
    )
    seen = engine.engine_environment()
    ranks = torch.tensor([float(rank)])
    dist.all_reduce(ranks)  # the trainer's world, after the engine started
    refitter = Refitter(RefitConfig(bucket_bytes=64 * 1024, max_logprob_gap=1e-3), engine)
    report = refitter.refit(((n, p.detach()) for n, p in target.named_parameters()), version=1)
    out = engine.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=6, temperature=0.8))
    lp, mask = sequence_logprobs(target, out, PROMPTS, 0.8)
    gap = refitter.verify(out.logprobs, lp, mask)["refit/logprob_gap_max"]
    engine.shutdown()
    result = {
        "rank": rank,
        "trainer_pid": os.getpid(),
        "engine_pid": engine.pid,
        "engine_launcher_env": {k: seen[k] for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR")},
        "engine_world": seen["dist_world_size"],
        "rank_sum": float(ranks.item()),
        "buckets": report.buckets,
        "gap": gap,
        "groups": out.prompt_index,
    }
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, result)
    if rank == 0:
        print("RESULT " + json.dumps(gathered), flush=True)
    teardown()


if __name__ == "__main__":
    main()
