"""Two processes: TP=2, PP=2 and DP=2 reproduce the one-process reference of MegatronPolicy.

Usage: torchrun --nproc_per_node 2 policy_parallel.py REF_DIR
REF_DIR/reference.pt is written by ``policy_reference.py``. For each layout the worker loads the
same HF weights, then checks: export_weights == initial weights; logprobs == reference;
one train step gives the reference loss, grad norm, (gathered, HF-named) gradients and updated
weights. At TP=2 it also checks the vocab-parallel logprob kernel against a naive log-softmax.

``tp2sp_shared`` and ``pp2_shared`` run the shared-prefix layout (one row per prompt) against the
rollout-layout reference.

Sequence parallelism (``tp2sp``, and ``tp2sp_recompute`` with full activation recomputation)
runs the same checks at TP=2 with ``sequence_parallel=True``: the transformer layers see half of
the (padded) sequence on each rank, the norm weights' partial gradients are all-reduced, and the
last stage all-gathers the hidden states before the vocab-parallel logprobs. A Qwen3 model (per
head q/k norms, whose gradients megatron sums over TP separately) checks SP == no SP at TP=2.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

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


def check_sequence_is_split(policy: MegatronPolicy, batch) -> None:
    """The layers really run on a sequence shard: the first layer's input is [S_pad / 2, B, H]
    with S_pad the micro-batch's longest row rounded up to even (odd lengths occur here)."""
    shapes: list[tuple[int, ...]] = []

    def record(_module: Any, args: tuple, kwargs: dict) -> None:
        shapes.append(tuple((args[0] if args else kwargs["hidden_states"]).shape))

    hook = policy.model.decoder.layers[0].register_forward_pre_hook(record, with_kwargs=True)
    try:
        policy.logprobs(batch)
    finally:
        hook.remove()
    mbs = policy.cfg.logprob_micro_batch_size or policy.cfg.micro_batch_size
    lengths = [
        int((batch.prompt_lengths[r] + batch.response_lengths[r]).max())
        for r in torch.arange(batch.size).split(mbs)
    ]
    assert any(n % 2 for n in lengths), lengths  # the padding path is exercised
    assert [s[0] for s in shapes] == [(n + n % 2) // 2 for n in lengths], (shapes, lengths)
    norm = policy.model.decoder.layers[0].input_layernorm.weight
    assert getattr(norm, "sequence_parallel", False), "norm weight not marked sequence_parallel"


def check_qk_norm_model_with_and_without_sp() -> None:
    """Qwen3 (q/k RMSNorm per head) at TP=2: sequence parallelism changes no logprob, loss or
    gradient (TP=2 without SP is checked against TP=1 by the layouts above)."""
    qwen3 = dataclasses.replace(pc.ARCH, model_type="qwen3", qk_layernorm=True)
    batch = pc.make_batch()
    results = []
    weights = None
    for sp in (False, True):
        policy = MegatronPolicy(qwen3, dataclasses.replace(pc.config(), sequence_parallel=sp))
        if weights is None:
            weights = {k: v.clone() for k, v in policy.export_weights()}
        policy.load_hf(weights)
        lp = policy.logprobs(batch)
        m = policy.train_step(pc.with_old_logprobs(batch, lp), pc.loss_fn)
        results.append((lp, m, dict(policy.export_grads()), dict(policy.export_weights())))
    (lp0, m0, g0, w0), (lp1, m1, g1, w1) = results
    torch.testing.assert_close(lp1, lp0, atol=pc.ATOL, rtol=1e-5)
    assert abs(m1["policy/loss"] - m0["policy/loss"]) < 1e-5, (m1, m0)
    assert abs(m1["policy/grad_norm"] - m0["policy/grad_norm"]) < 1e-5, (m1, m0)
    assert any("q_norm" in k for k in g1), sorted(g1)[:8]
    pc.assert_close_dicts(g1, g0, "qwen3 sp grads")
    pc.assert_close_dicts(w1, w0, "qwen3 sp updated weights")
    pc.check("qk_norm_model_tp2sp_equals_tp2")


def run_layout(tp: int, pp: int, ref: dict, label: str, **policy_kw: Any) -> None:
    info = set_model_parallel(tp, pp, seed=0)
    policy = MegatronPolicy(pc.ARCH, dataclasses.replace(pc.config(), **policy_kw))
    policy.load_hf(ref["hf0"])
    pc.assert_close_dicts(dict(policy.export_weights()), ref["hf0"], f"{label} export", atol=0)
    pc.check(f"export_weights_{label}_equals_tp1")

    full = pc.with_old_logprobs(pc.make_batch(), ref["lp0"])
    torch.testing.assert_close(full.extras.old_logprobs, ref["old_logprobs"])
    if info.dp == 2:  # each DP rank: half of the groups
        groups = [10, 11] if info.dp_rank == 0 else [12, 13]
        batch = pc.rows_of_groups(full, groups)
        rows = torch.isin(full.group_ids, torch.tensor(groups)).nonzero().squeeze(1)
        lp_ref = ref["lp0"][rows]
    else:
        batch, lp_ref = full, ref["lp0"]
    lp = policy.logprobs(batch)
    torch.testing.assert_close(lp, lp_ref, atol=pc.ATOL, rtol=1e-5)
    if policy_kw.get("sequence_parallel") and policy_kw.get("layout", "rollout") == "rollout":
        check_sequence_is_split(policy, batch)
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
    if label == "tp2":
        from megatron.core import parallel_state as ps

        check_vocab_parallel_kernel(ps.get_tensor_model_parallel_group(), info.tp_rank)


def main(ref_dir: Path) -> None:
    ref = torch.load(ref_dir / "reference.pt", weights_only=True)
    init_parallel(2, 1, seed=0)
    run_layout(2, 1, ref, "tp2")
    run_layout(2, 1, ref, "tp2sp", sequence_parallel=True)
    run_layout(2, 1, ref, "tp2sp_recompute", sequence_parallel=True, recompute="full")
    check_qk_norm_model_with_and_without_sp()
    run_layout(1, 2, ref, "pp2")
    run_layout(1, 1, ref, "dp2")
    # the shared-prefix layout (one row per prompt) against the rollout-layout reference; under
    # sequence parallelism the packed rows are padded to a multiple of TP as well
    run_layout(2, 1, ref, "tp2sp_shared", sequence_parallel=True, layout="shared_prefix")
    run_layout(1, 2, ref, "pp2_shared", layout="shared_prefix")
    teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
