"""Two processes: TP=2, PP=2 and DP=2 reproduce the one-process reference of MegatronPolicy.

Usage: torchrun --nproc_per_node 2 policy_parallel.py REF_DIR
REF_DIR/reference.pt is written by ``policy_reference.py``. For each layout the worker loads the
same HF weights, then checks: export_weights == initial weights; logprobs == reference;
one train step gives the reference loss, grad norm, (gathered, HF-named) gradients and updated
weights. At TP=2 it also checks the vocab-parallel logprob kernel against a naive log-softmax.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

import policy_common as pc

from nemo_rence.policy.megatron.logprobs import vocab_parallel_token_logprobs
from nemo_rence.policy.megatron.parallel import init_parallel, set_model_parallel, teardown
from nemo_rence.policy.megatron.policy import MegatronPolicy


def check_vocab_parallel_kernel(tp_group: dist.ProcessGroup, tp_rank: int) -> None:
    """Each TP rank holds half of the vocabulary rows (padded: V=50 of 64 rows)."""
    g = torch.Generator().manual_seed(3)
    m, h, vp, v = 29, 12, 64, 50
    hidden = torch.randn(m, h, generator=g)
    weight = torch.randn(vp, h, generator=g)
    labels = torch.randint(0, v, (m,), generator=g)
    upstream = torch.randn(m, generator=g)
    for tau, chunk in ((1.0, 4), (0.6, 29), (1.3, 100)):
        hid = hidden.clone().requires_grad_(True)
        shard = weight[tp_rank * 32 : (tp_rank + 1) * 32].clone().requires_grad_(True)
        out = vocab_parallel_token_logprobs(
            hid, shard, labels, temperature=tau, chunk_size=chunk, vocab_size=v, group=tp_group
        )
        gh, gw = torch.autograd.grad((out * upstream).sum(), (hid, shard))
        hid_r = hidden.clone().double().requires_grad_(True)
        w_r = weight.clone().double().requires_grad_(True)
        ref = torch.log_softmax((hid_r @ w_r.t())[:, :v] / tau, -1).gather(1, labels[:, None])
        rh, rw = torch.autograd.grad((ref.squeeze(1) * upstream.double()).sum(), (hid_r, w_r))
        torch.testing.assert_close(out, ref.squeeze(1).float(), atol=pc.ATOL, rtol=1e-5)
        torch.testing.assert_close(gh, rh.float(), atol=pc.ATOL, rtol=1e-5)
        torch.testing.assert_close(
            gw, rw[tp_rank * 32 : (tp_rank + 1) * 32].float(), atol=pc.ATOL, rtol=1e-5
        )
    pc.check("vocab_parallel_kernel_matches_naive_at_tp2")


def run_layout(tp: int, pp: int, ref: dict, label: str) -> None:
    info = set_model_parallel(tp, pp, seed=0)
    policy = MegatronPolicy(pc.ARCH, pc.config())
    policy.load_hf(ref["hf0"])
    pc.assert_close_dicts(dict(policy.export_weights()), ref["hf0"], f"{label} export", atol=0)
    pc.check(f"export_weights_{label}_equals_tp1")

    full = pc.with_old_logprobs(pc.make_batch(), ref["lp0"])
    torch.testing.assert_close(full.extras["old_logprobs"], ref["old_logprobs"])
    if info.dp == 2:  # each DP rank: half of the groups
        groups = [10, 11] if info.dp_rank == 0 else [12, 13]
        batch = pc.rows_of_groups(full, groups)
        rows = torch.isin(full.group_ids, torch.tensor(groups)).nonzero().squeeze(1)
        lp_ref = ref["lp0"][rows]
    else:
        batch, lp_ref = full, ref["lp0"]
    lp = policy.logprobs(batch)
    torch.testing.assert_close(lp, lp_ref, atol=pc.ATOL, rtol=1e-5)
    pc.check(f"logprobs_{label}_equal_tp1")

    metrics = policy.train_step(batch, pc.loss_fn)
    refm = ref["metrics"]
    assert abs(metrics["policy/loss"] - refm["policy/loss"]) < 1e-5, (metrics, refm)
    assert abs(metrics["policy/grad_norm"] - refm["policy/grad_norm"]) < 1e-5, (metrics, refm)
    assert metrics["policy/tokens"] == refm["policy/tokens"]
    for k in ("loss/rence", "kl/k3", "loss/dapo"):
        assert abs(metrics[k] - refm[k]) < 1e-5, (k, metrics[k], refm[k])
    pc.check(f"loss_and_global_grad_norm_{label}_equal_tp1")
    pc.assert_close_dicts(dict(policy.export_grads()), ref["grads"], f"{label} grads")
    pc.check(f"gradients_{label}_equal_tp1")
    pc.assert_close_dicts(dict(policy.export_weights()), ref["hf1"], f"{label} updated weights")
    pc.check(f"optimizer_step_{label}_equals_tp1")
    if tp == 2:
        from megatron.core import parallel_state as ps

        check_vocab_parallel_kernel(ps.get_tensor_model_parallel_group(), info.tp_rank)


def main(ref_dir: Path) -> None:
    ref = torch.load(ref_dir / "reference.pt", weights_only=True)
    init_parallel(2, 1, seed=0)
    run_layout(2, 1, ref, "tp2")
    run_layout(1, 2, ref, "pp2")
    run_layout(1, 1, ref, "dp2")
    teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
