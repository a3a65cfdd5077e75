"""One process (TP=PP=DP=1): reference results + single-replica checks of MegatronPolicy.

Usage: torchrun --nproc_per_node 1 policy_reference.py OUT_DIR
Writes OUT_DIR/reference.pt: initial HF weights, logprobs, metrics, gradients and updated weights
of one train step on the batch of ``policy_common.make_batch``.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import policy_common as pc

from nemo_rence.policy.interface import PolicyBatch
from nemo_rence.policy.megatron.parallel import init_parallel, teardown
from nemo_rence.policy.megatron.policy import MegatronPolicy


def main(out_dir: Path) -> None:
    init_parallel(1, 1, seed=0)
    policy = MegatronPolicy(pc.ARCH, pc.config())
    # Reload the exported weights so that the padded vocabulary rows are zero, as at TP/PP > 1.
    hf0 = {k: v.clone() for k, v in policy.export_weights()}
    policy.load_hf(hf0)
    batch = pc.make_batch()
    lp0 = policy.logprobs(batch)
    assert lp0.shape == (batch.size, batch.width)
    assert torch.all(lp0[batch.response_mask == 0] == 0) and torch.all(
        lp0[batch.response_mask > 0] < 0
    )

    # Megatron's own full-logits path (post_process on) at temperature 0.8 agrees with ours.
    with torch.no_grad():
        ids = batch.input_ids
        pos = torch.arange(ids.shape[1])[None].expand_as(ids)
        logits = policy.model(ids, pos, None)[..., : pc.ARCH.vocab_size] / 0.8  # [B, L, V]
        full = torch.log_softmax(logits.double(), dim=-1)
    for i in range(batch.size):
        p, r = int(batch.prompt_lengths[i]), int(batch.response_lengths[i])
        expect = full[i, p - 1 : p + r - 1].gather(1, ids[i, p : p + r, None]).squeeze(1)
        torch.testing.assert_close(lp0[i, :r], expect.float(), atol=pc.ATOL, rtol=1e-5)
    pc.check("logprobs_match_megatron_full_logits_at_temperature")

    # The same for an untied output layer (Qwen2: separate lm_head, q/k/v bias).
    qwen = dataclasses.replace(
        pc.ARCH, model_type="qwen2", qkv_bias=True, tie_word_embeddings=False
    )
    untied = MegatronPolicy(qwen, pc.config())
    assert not untied.model.share_embeddings_and_output_weights
    lp_untied = untied.logprobs(batch)
    with torch.no_grad():
        logits = untied.model(ids, pos, None)[..., : qwen.vocab_size] / 0.8
        full_untied = torch.log_softmax(logits.double(), dim=-1)
    for i in range(batch.size):
        p, r = int(batch.prompt_lengths[i]), int(batch.response_lengths[i])
        expect = full_untied[i, p - 1 : p + r - 1].gather(1, ids[i, p : p + r, None]).squeeze(1)
        torch.testing.assert_close(lp_untied[i, :r], expect.float(), atol=pc.ATOL, rtol=1e-5)
    pc.check("logprobs_match_megatron_full_logits_untied_output_layer")

    # Padding contract: extra padding columns and garbage after a response change nothing.
    wide = torch.randint(0, pc.ARCH.vocab_size, (batch.size, batch.input_ids.shape[1] + 7))
    wide[:, : batch.input_ids.shape[1]] = batch.input_ids
    for i in range(batch.size):
        end = int(batch.prompt_lengths[i] + batch.response_lengths[i])
        wide[i, end:] = torch.randint(0, pc.ARCH.vocab_size, (wide.shape[1] - end,))
    padded = PolicyBatch(
        wide, batch.prompt_lengths, batch.response_lengths, batch.group_ids, response_width=12
    )
    lp_wide = policy.logprobs(padded)
    assert lp_wide.shape == (batch.size, 12)
    torch.testing.assert_close(lp_wide[:, : batch.width], lp0, atol=pc.ATOL, rtol=1e-5)
    assert torch.all(lp_wide[:, batch.width :] == 0)
    pc.check("padding_and_trailing_tokens_do_not_change_logprobs")

    batch = pc.with_old_logprobs(batch, lp0)
    metrics = policy.train_step(batch, pc.loss_fn)
    grads = {k: v.clone() for k, v in policy.export_grads()}
    hf1 = {k: v.clone() for k, v in policy.export_weights()}
    assert metrics["policy/num_micro_batches"] == 4 and metrics["policy/grad_norm"] > 0.05
    assert any(torch.count_nonzero(v) for v in grads.values())
    changed = sum(not torch.equal(hf0[k], hf1[k]) for k in hf0)
    assert changed == len(hf0), f"only {changed}/{len(hf0)} tensors were updated"

    # Whole-group micro-batching: 1, 2 and 4 micro-batches give the same gradient and loss.
    for mbs in (12, 6):
        other = MegatronPolicy(pc.ARCH, pc.config(micro_batch_size=mbs))
        other.load_hf(hf0)
        m = other.train_step(batch, pc.loss_fn)
        assert m["policy/num_micro_batches"] == 12 // mbs
        assert abs(m["policy/loss"] - metrics["policy/loss"]) < 1e-6, (m, metrics)
        assert abs(m["policy/grad_norm"] - metrics["policy/grad_norm"]) < 1e-6
        pc.assert_close_dicts(dict(other.export_grads()), grads, f"grads mbs={mbs}")
        pc.assert_close_dicts(dict(other.export_weights()), hf1, f"weights mbs={mbs}")
    pc.check("micro_batches_of_whole_groups_accumulate_the_same_gradient")

    # Full activation recomputation changes memory, not results.
    recompute = MegatronPolicy(pc.ARCH, dataclasses.replace(pc.config(), recompute="full"))
    recompute.load_hf(hf0)
    assert recompute.model.config.recompute_granularity == "full"
    m = recompute.train_step(batch, pc.loss_fn)
    assert abs(m["policy/loss"] - metrics["policy/loss"]) < 1e-6, (m, metrics)
    pc.assert_close_dicts(dict(recompute.export_grads()), grads, "grads recompute=full")
    pc.check("activation_recomputation_gives_the_same_gradient")

    # Shared-prefix layout (one row per prompt, its K responses behind it): Megatron's own
    # full-vocabulary logits of the plain rows agree, and a train step gives the rollout
    # layout's loss, gradients and update, with and without activation recomputation.
    plain = pc.make_batch()
    for kw in ({}, {"recompute": "full"}):
        shared = MegatronPolicy(
            pc.ARCH, dataclasses.replace(pc.config(layout="shared_prefix"), **kw)
        )
        shared.load_hf(hf0)
        lp_shared, rows_seen = pc.decoder_batch_sizes(shared, partial(shared.logprobs, plain))
        assert rows_seen == [4, 4, 2], rows_seen  # 5-row splits hold 4, 4 and 2 distinct prompts
        for i in range(plain.size):
            p, r = int(plain.prompt_lengths[i]), int(plain.response_lengths[i])
            expect = full[i, p - 1 : p + r - 1].gather(1, ids[i, p : p + r, None]).squeeze(1)
            torch.testing.assert_close(lp_shared[i, :r], expect.float(), atol=pc.ATOL, rtol=1e-5)
        torch.testing.assert_close(lp_shared, lp0, atol=pc.ATOL, rtol=1e-5)
        m, rows_seen = pc.decoder_batch_sizes(shared, partial(shared.train_step, batch, pc.loss_fn))
        # 4 micro-batches of one group each: one row each (twice with recomputation)
        assert rows_seen == [1] * (8 if kw else 4), rows_seen
        assert abs(m["policy/loss"] - metrics["policy/loss"]) < 1e-6, (m, metrics)
        assert abs(m["policy/grad_norm"] - metrics["policy/grad_norm"]) < 1e-6, (m, metrics)
        pc.assert_close_dicts(dict(shared.export_grads()), grads, f"shared-prefix grads {kw}")
        pc.assert_close_dicts(dict(shared.export_weights()), hf1, f"shared-prefix weights {kw}")
    # Positions matter: with sharp, strong attention (q, k x30; v, o x10) a response restarted
    # at the wrong RoPE position or seeing another response would move logprobs by far more
    # than ATOL (random-init attention is nearly uniform and weak next to the residual stream,
    # so the checks above are gentle).
    scale = {"q_proj": 30, "k_proj": 30, "v_proj": 10, "o_proj": 10}
    sharp_w = {k: v * next((f for n, f in scale.items() if n in k), 1) for k, v in hf0.items()}
    sharp = [MegatronPolicy(pc.ARCH, pc.config(layout=lay)) for lay in ("rollout", "shared_prefix")]
    for pol in sharp:
        pol.load_hf(sharp_w)
    lp_sharp = [pol.logprobs(plain) for pol in sharp]
    with torch.no_grad():
        sharp_full = torch.log_softmax(
            sharp[0].model(ids, pos, None)[..., : pc.ARCH.vocab_size].double() / 0.8, dim=-1
        )
    for i in range(plain.size):
        p, r = int(plain.prompt_lengths[i]), int(plain.response_lengths[i])
        expect = sharp_full[i, p - 1 : p + r - 1].gather(1, ids[i, p : p + r, None]).squeeze(1)
        torch.testing.assert_close(lp_sharp[1][i, :r], expect.float(), atol=pc.ATOL, rtol=1e-5)
    assert (lp_sharp[0] - lp0).abs().max() > 0.5  # the sharpening does change the model
    # untied output layer (Qwen2) too
    untied_shared = MegatronPolicy(qwen, pc.config(layout="shared_prefix"))
    untied_shared.load_hf(dict(untied.export_weights()))
    torch.testing.assert_close(untied_shared.logprobs(plain), lp_untied, atol=pc.ATOL, rtol=1e-5)
    pc.check("shared_prefix_layout_equals_rollout_layout")

    # A micro-batch size that would split a group fails before any compute.
    bad = MegatronPolicy(pc.ARCH, pc.config(micro_batch_size=4))
    try:
        bad.train_step(batch, pc.loss_fn)
    except ValueError as e:
        assert "would split groups of 3 rollouts" in str(e), e
    else:
        raise AssertionError("micro_batch_size=4 with groups of 3 did not raise")
    pc.check("micro_batch_size_that_splits_a_group_raises")

    # export_weights is lazy: a tensor is read only when the iterator reaches it.
    it = policy.export_weights()
    assert isinstance(it, types.GeneratorType)
    first_name, _ = next(it)
    with torch.no_grad():
        policy.model.decoder.final_layernorm.weight.add_(1.0)
    rest = dict(it)
    torch.testing.assert_close(rest["model.norm.weight"], hf1["model.norm.weight"] + 1.0)
    with torch.no_grad():
        policy.model.decoder.final_layernorm.weight.sub_(1.0)
    assert first_name == "model.embed_tokens.weight"
    pc.check("export_weights_is_lazy")

    torch.save(
        {
            "hf0": hf0,
            "lp0": lp0,
            "old_logprobs": batch.extras.old_logprobs,
            "metrics": metrics,
            "grads": grads,
            "hf1": hf1,
        },
        out_dir / "reference.pt",
    )

    # save / load restores weights and the optimizer state: the next step is identical.
    policy.save(out_dir / "ckpt")
    restored = MegatronPolicy(pc.ARCH, pc.config())
    restored.load(out_dir / "ckpt")
    pc.assert_close_dicts(dict(restored.export_weights()), hf1, "restored weights", atol=0)
    m_a = policy.train_step(batch, pc.loss_fn)
    m_b = restored.train_step(batch, pc.loss_fn)
    assert m_a == m_b, (m_a, m_b)
    pc.assert_close_dicts(
        dict(restored.export_weights()), dict(policy.export_weights()), "2nd step", atol=0
    )
    pc.check("save_load_restores_weights_and_optimizer_state")
    teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
