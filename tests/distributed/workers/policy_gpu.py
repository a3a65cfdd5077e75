"""GPU: MegatronPolicy with the Transformer Engine spec, bf16 and Megatron's distributed optimizer.

Usage: torchrun --nproc_per_node G policy_gpu.py OUT_DIR   (G = 1 or 2 GPUs; TP = G)
Checks: logprobs agree with megatron's own full-logits path (bf16 tolerance); a train step runs
through ``get_megatron_optimizer`` and changes every tensor; export_weights yields the HF names;
save / load restores the weights and the next step matches. With 2 GPUs (TP=2) also: Transformer
Engine with sequence parallelism gives the same logprobs, loss and grad norm (bf16 tolerance).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import policy_common as pc

from nemo_rence.policy.megatron.optimizer import OptimizerSettings
from nemo_rence.policy.megatron.parallel import init_parallel, teardown
from nemo_rence.policy.megatron.policy import MegatronPolicy, MegatronPolicyConfig


def main(out_dir: Path) -> None:
    init_parallel(min(torch.cuda.device_count(), 2), 1, seed=0)
    cfg = MegatronPolicyConfig(
        micro_batch_size=3,
        temperature=0.8,
        optimizer=OptimizerSettings(lr=1e-3, clip_grad=1.0),
        params_dtype=torch.bfloat16,
        spec="te",
        recompute="full",
    )
    policy = MegatronPolicy(pc.ARCH, cfg)
    assert next(policy.model.parameters()).is_cuda
    hf0 = {k: v.float().cpu().clone() for k, v in policy.export_weights()}
    policy.load_hf(hf0)
    batch = pc.make_batch()
    lp0 = policy.logprobs(batch)
    with torch.no_grad():
        ids = batch.input_ids.cuda()
        pos = torch.arange(ids.shape[1], device="cuda")[None].expand_as(ids)
        logits = policy.model(ids, pos, None, runtime_gather_output=True)
        full = torch.log_softmax(logits[..., : pc.ARCH.vocab_size].float() / 0.8, -1).cpu()
    for i in range(batch.size):
        p, r = int(batch.prompt_lengths[i]), int(batch.response_lengths[i])
        expect = full[i, p - 1 : p + r - 1].gather(1, batch.input_ids[i, p : p + r, None])
        torch.testing.assert_close(lp0[i, :r], expect.squeeze(1), atol=2e-2, rtol=2e-2)
    pc.check("gpu_logprobs_match_megatron_full_logits")

    batch = pc.with_old_logprobs(batch, lp0)
    sp_metrics = None
    if policy._tp_size > 1:  # TE's sequence-parallel layers on the same weights
        sp = MegatronPolicy(pc.ARCH, dataclasses.replace(cfg, sequence_parallel=True))
        sp.load_hf(hf0)
        torch.testing.assert_close(sp.logprobs(batch), lp0, atol=2e-2, rtol=2e-2)
        sp_metrics = sp.train_step(batch, pc.loss_fn)
        del sp
    metrics = policy.train_step(batch, pc.loss_fn)
    assert metrics["policy/grad_norm"] > 0 and torch.isfinite(torch.tensor(metrics["policy/loss"]))
    if sp_metrics is not None:
        for k in ("policy/loss", "policy/grad_norm"):
            assert abs(sp_metrics[k] - metrics[k]) <= 2e-2 * max(1.0, abs(metrics[k])), (
                k,
                sp_metrics[k],
                metrics[k],
            )
        pc.check("gpu_sequence_parallel_matches_tp_at_tp2")
    hf1 = {k: v.float().cpu().clone() for k, v in policy.export_weights()}
    assert sorted(hf1) == sorted(hf0)
    assert all(not torch.equal(hf0[k], hf1[k]) for k in hf0 if "norm" not in k)
    pc.check("gpu_train_step_with_megatron_distributed_optimizer")

    policy.save(out_dir / "ckpt")
    restored = MegatronPolicy(pc.ARCH, cfg)
    restored.load(out_dir / "ckpt")
    pc.assert_close_dicts(
        {k: v.float().cpu() for k, v in restored.export_weights()}, hf1, "restored", atol=0
    )
    m_a = policy.train_step(batch, pc.loss_fn)
    m_b = restored.train_step(batch, pc.loss_fn)
    assert abs(m_a["policy/loss"] - m_b["policy/loss"]) < 1e-6, (m_a, m_b)
    pc.check("gpu_save_load_restores_weights_and_optimizer_state")
    teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
