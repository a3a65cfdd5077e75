"""GPU without Transformer Engine: MegatronPolicy with megatron's LOCAL layer spec in bf16 on CUDA.

Usage: python local_spec_policy.py OUT_DIR     (one process: a world of one over NCCL)
Checks, each printed as ``CHECK <name> OK``: NCCL works with one rank; the policy's logprobs
match Hugging Face's logits of the same weights (log softmax(logits / T), bf16 tolerance); a
train step through Megatron's distributed optimizer changes the weights; save / load restores
weights and optimizer state (the next step matches).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "distributed" / "workers"))

import policy_common as pc

from nemo_rence.policy.megatron.optimizer import OptimizerSettings
from nemo_rence.policy.megatron.parallel import init_parallel, teardown
from nemo_rence.policy.megatron.policy import MegatronPolicy, MegatronPolicyConfig

TEMPERATURE = 0.8


def hf_logprobs(hf_state: dict[str, torch.Tensor], batch) -> torch.Tensor:
    """[N, T] log softmax(logits / T) of the response tokens under transformers' Llama."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(**pc.ARCH.to_hf_config())).cuda().eval()
    missing, unexpected = model.load_state_dict(hf_state, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    out = torch.zeros(batch.size, batch.width)
    with torch.no_grad():
        for i in range(batch.size):
            p, r = int(batch.prompt_lengths[i]), int(batch.response_lengths[i])
            if r == 0:
                continue
            ids = batch.input_ids[i : i + 1, : p + r].cuda()
            logits = model(ids).logits[0].float() / TEMPERATURE
            lp = torch.log_softmax(logits, -1)[p - 1 : p + r - 1]
            out[i, :r] = lp.gather(1, ids[0, p : p + r, None]).squeeze(1).cpu()
    return out


def main(out_dir: Path) -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    info = init_parallel(1, 1, seed=0)
    assert dist.get_backend() == "nccl" and info.world_size == 1
    t = torch.ones(4, device="cuda")
    dist.all_reduce(t)
    torch.cuda.synchronize()
    assert t.sum().item() == 4.0
    pc.check("nccl_world_of_one")

    cfg = MegatronPolicyConfig(
        micro_batch_size=3,
        temperature=TEMPERATURE,
        optimizer=OptimizerSettings(lr=1e-3, clip_grad=1.0),
        params_dtype=torch.bfloat16,
        spec="local",
    )
    policy = MegatronPolicy(pc.ARCH, cfg)
    assert next(policy.model.parameters()).is_cuda
    hf0 = {k: v.float().cpu().clone() for k, v in policy.export_weights()}
    batch = pc.make_batch()
    lp0 = policy.logprobs(batch)
    ref = hf_logprobs({k: v.cuda() for k, v in hf0.items()}, batch)
    mask = batch.response_mask
    gap = ((lp0.float() - ref).abs() * mask).max().item()
    assert gap < 5e-2, f"max |policy - HF| logprob gap {gap:.4f} nats (bf16 tolerance 5e-2)"
    print(f"local-spec bf16 logprob gap vs HF: max {gap:.4f} nats", flush=True)
    pc.check("local_spec_logprobs_match_hf_logits")

    batch = pc.with_old_logprobs(batch, lp0)
    metrics = policy.train_step(batch, pc.loss_fn)
    assert metrics["policy/grad_norm"] > 0 and torch.isfinite(torch.tensor(metrics["policy/loss"]))
    hf1 = {k: v.float().cpu().clone() for k, v in policy.export_weights()}
    assert all(not torch.equal(hf0[k], hf1[k]) for k in hf0 if "norm" not in k)
    pc.check("local_spec_train_step_with_megatron_distributed_optimizer")

    policy.save(out_dir / "ckpt")
    restored = MegatronPolicy(pc.ARCH, cfg)
    restored.load(out_dir / "ckpt")
    pc.assert_close_dicts(
        {k: v.float().cpu() for k, v in restored.export_weights()}, hf1, "restored", atol=0
    )
    m_a = policy.train_step(batch, pc.loss_fn)
    m_b = restored.train_step(batch, pc.loss_fn)
    assert abs(m_a["policy/loss"] - m_b["policy/loss"]) < 1e-6, (m_a, m_b)
    pc.check("local_spec_save_load_restores_weights_and_optimizer_state")
    teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
