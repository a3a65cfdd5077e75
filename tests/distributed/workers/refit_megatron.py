"""Worker: refit a transformers engine from a Megatron policy perturbed by an optimizer step.

Run by tests/distributed/test_refit_megatron.py with ``torchrun --nproc_per_node N`` (TP=N) or
plainly (TP=1); ``share`` as the second argument makes the engine take the policy's tensors by
reference (``HFEngine(share_weights=True)``, bound by a first refit before any rollout). Prints
one JSON line from rank 0: the engine-vs-policy logprob gaps before and after the refit, and the
bytes of engine parameters that live in the policy's own parameter storage.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch


def shared_bytes(engine_model: torch.nn.Module, policy_model: torch.nn.Module) -> int:
    """Bytes of engine parameters stored inside some policy parameter's storage."""
    storages = {p.untyped_storage().data_ptr() for p in policy_model.parameters()}
    return sum(
        p.numel() * p.element_size()
        for p in engine_model.parameters()  # tied aliases counted once
        if p.untyped_storage().data_ptr() in storages
    )


def main(tp: int, share: bool) -> None:
    from transformers import AutoModelForCausalLM

    from nemo_rence.arch import ArchSpec
    from nemo_rence.batching import groups_to_policy_batch, rollouts_to_groups
    from nemo_rence.policy.interface import algorithm_loss
    from nemo_rence.policy.megatron.optimizer import OptimizerSettings
    from nemo_rence.policy.megatron.parallel import init_parallel, teardown
    from nemo_rence.policy.megatron.policy import MegatronPolicy, MegatronPolicyConfig
    from nemo_rence.refit import RefitConfig, Refitter, logprob_gap
    from nemo_rence.rollout import SamplingParams
    from nemo_rence.rollout.hf_engine import HFEngine
    from nemo_rence.tiny import write_tiny_hf_dir

    # every rank writes the same deterministic model into its own directory (before the process
    # group exists: transformers saves on the main process only once torch.distributed is up)
    hf_dir = write_tiny_hf_dir(Path(tempfile.mkdtemp()) / "tiny", layers=2, hidden=64, tie=False)
    info = init_parallel(tp, 1, seed=0)
    arch = ArchSpec.from_hf_config(json.loads((hf_dir / "config.json").read_text()))
    policy = MegatronPolicy(
        arch,
        MegatronPolicyConfig(micro_batch_size=4, optimizer=OptimizerSettings(lr=5e-3)),
    )
    policy.load_hf(hf_dir)

    engine_model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    engine = HFEngine(engine_model, eos_token_ids=[257], share_weights=share)
    Refitter(RefitConfig(), engine).refit(policy.export_weights(), version=0)
    prompts = [[72, 105, 33, 10], [50, 43, 50, 61]]
    # the same rollouts on every rank: fixed seed, identical starting weights
    out = engine.generate(prompts, SamplingParams(n=4, max_new_tokens=10, seed=0))
    results = [type("R", (), {"reward": float(i % 3 == 0)})() for i in range(len(out))]
    batch = groups_to_policy_batch(
        rollouts_to_groups(
            [type("P", (), {"id": str(i)})() for i in range(2)], prompts, out, results
        )
    )
    batch.extras.old_logprobs = policy.logprobs(batch)
    for _ in range(2):  # perturb the policy with two ReNCE steps
        policy.train_step(batch, algorithm_loss("rence", {"alpha": 0.5, "beta": 1.0}))
    new = policy.logprobs(batch)

    def engine_vs_policy() -> dict[str, float]:
        replay = engine.generate(prompts, SamplingParams(n=1, max_new_tokens=1, seed=0))
        del replay  # generation works after the refit; scores come from a full forward below
        lp = torch.zeros_like(new)
        with torch.no_grad():
            for i in range(batch.size):
                p, r = int(batch.prompt_lengths[i]), int(batch.response_lengths[i])
                ids = batch.input_ids[i : i + 1, : p + r]
                logits = engine_model(ids).logits[0, p - 1 : p + r - 1].float()
                lp[i, :r] = torch.log_softmax(logits, -1).gather(-1, ids[0, p:, None])[:, 0]
        rows = [lp[i, : int(batch.response_lengths[i])].tolist() for i in range(batch.size)]
        return logprob_gap(rows, new, batch.response_mask)

    before = engine_vs_policy()
    weights = policy.export_weights()
    report = Refitter(RefitConfig(bucket_bytes=64 * 1024), engine).refit(weights, version=1)
    after = engine_vs_policy()
    if info.rank == 0:
        print(
            "RESULT "
            + json.dumps(
                {
                    "before": before["refit/logprob_gap_max"],
                    "after": after["refit/logprob_gap_max"],
                    "buckets": report.buckets,
                    "tensors": report.tensors,
                    "tp": tp,
                    "bytes": report.bytes,
                    "shared_bytes": shared_bytes(engine_model, policy.model),
                    "norm_bytes": 4 * (2 * arch.num_layers + 1) * arch.hidden_size,
                    "qkv_bytes": 4
                    * arch.num_layers
                    * arch.hidden_size
                    * (arch.num_attention_heads + 2 * arch.num_query_groups)
                    * arch.head_dim,
                }
            ),
            flush=True,
        )
    teardown()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:] == ["share"])
