"""The planner's arithmetic against hand-computed cases and published numbers."""

from __future__ import annotations

import dataclasses

import pytest

from nemo_rence.arch import ArchSpec
from nemo_rence.plan.memory import (
    CPU_FP32,
    GIB,
    GPU_BF16,
    Precision,
    Workload,
    activation_bytes_per_layer,
    estimate,
    kv_cache_bytes,
    plan,
    rank_params,
    state_bytes,
    total_params,
)
from nemo_rence.plan.models import HF_CONFIGS, arch_for, known_models

PAPER = Workload(seq_len=8192, micro_batch_rows=8, micro_batches_per_step=32, group_size=8)


def gpt_arch(h: int, a: int, layers: int = 1) -> ArchSpec:
    """A GPT-shaped layer as in Korthikanti et al.: MHA, 4h MLP."""
    return ArchSpec(
        model_type="llama",
        num_layers=layers,
        hidden_size=h,
        num_attention_heads=a,
        num_query_groups=a,
        head_dim=h // a,
        ffn_hidden_size=4 * h,
        vocab_size=51200,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        rope_theta=1e4,
    )


def test_bytes_per_parameter_match_megatron_distributed_optimizer_table() -> None:
    # Megatron-LM dist_optimizer guide: bf16 params + fp32 grads: 18 B/param, 6 + 12/d sharded.
    w, g, o = state_bytes(1, GPU_BF16)
    assert (w, g, o) == (2, 4, 12) and w + g + o == 18
    w, g, o = state_bytes(1, GPU_BF16, dp=8, distributed_optimizer=True)
    assert w + g + o == pytest.approx(6 + 12 / 8)
    # fp32 on CPU: weights 4 + grads 4 + Adam moments 8, no master copy
    assert sum(state_bytes(1, CPU_FP32)) == 16


def test_state_memory_reproduces_zero_paper_figure_1() -> None:
    # Rajbhandari et al. 2020 (ZeRO), Fig. 1: 7.5B params, fp16 grads, K=12, Nd=64:
    # baseline 120 GB, optimizer-state partitioning (P_os, = distributed optimizer) 31.4 GB.
    fp16_grads = Precision(param_bytes=2, grad_bytes=2, master_bytes=4, moment_bytes=8)
    assert sum(state_bytes(7.5e9, fp16_grads)) / 1e9 == pytest.approx(120.0)
    pos = sum(state_bytes(7.5e9, fp16_grads, dp=64, distributed_optimizer=True)) / 1e9
    assert pos == pytest.approx(31.4, abs=0.05)


@pytest.mark.parametrize(
    ("name", "total", "non_embedding"),
    [
        # published on the models' cards: Llama-3.1-8B 8,030,261,248 parameters;
        # Qwen3-8B 8.2B total / 6.95B non-embedding; Qwen3-4B 4.0B / 3.6B; Llama-3.1-70B 70.6B.
        ("Llama-3.1-8B", 8_030_261_248, None),
        ("Qwen3-8B", 8.19e9, 6.95e9),
        ("Qwen3-4B", 4.02e9, 3.6e9),
        ("Llama-3.1-70B", 70.55e9, None),
    ],
)
def test_parameter_counts_match_published_model_sizes(name, total, non_embedding) -> None:
    arch = arch_for(name)
    assert total_params(arch) == pytest.approx(total, rel=5e-3)
    if non_embedding is not None:
        emb = arch.vocab_size * arch.hidden_size * (1 if arch.tie_word_embeddings else 2)
        assert total_params(arch) - emb == pytest.approx(non_embedding, rel=1e-2)


def test_rank_params_split_layers_over_tp_and_pp() -> None:
    arch = arch_for("Llama-3.1-8B")
    full = rank_params(arch)
    assert full == total_params(arch)  # 128256 is already a multiple of 128: no padding
    # TP=8 divides every matrix; norms (2h per layer + h) are replicated
    norms = 2 * arch.hidden_size * arch.num_layers + arch.hidden_size
    assert rank_params(arch, tp=8) == pytest.approx((full - norms) / 8 + norms, abs=1)
    # PP=2: the largest stage holds half the layers + one of embedding / output layer
    stage = rank_params(arch, pp=2)
    assert stage < full / 2 + arch.vocab_size * arch.hidden_size


def test_activation_formula_reproduces_korthikanti() -> None:
    # Korthikanti et al. 2022, eqs. (1)-(2), Table 2: per layer, fp16, GPT with dropout.
    s, b, h, a, t = 2048, 4, 6144, 64, 8
    arch = gpt_arch(h, a)
    gpt = dataclasses.replace(GPU_BF16, flash_attention=False, dropout=True)

    def ours(**kw):
        return activation_bytes_per_layer(arch, s, b, gpt, gated_mlp=False, **kw)

    assert ours() == pytest.approx(s * b * h * (34 + 5 * a * s / h))
    assert ours(tp=t) == pytest.approx(s * b * h * (10 + 24 / t + 5 * a * s / (h * t)))
    assert ours(tp=t, sequence_parallel=True) == pytest.approx(s * b * h / t * (34 + 5 * a * s / h))
    assert ours(tp=t, sequence_parallel=True, recompute="selective") == pytest.approx(
        34 * s * b * h / t
    )
    assert ours(recompute="full") == pytest.approx(2 * s * b * h)


def test_recompute_never_increases_activations() -> None:
    arch = arch_for("Qwen3-8B")
    for prec in (GPU_BF16, CPU_FP32):
        none, sel, full = (
            activation_bytes_per_layer(arch, 4096, 8, prec, tp=2, recompute=r)
            for r in ("none", "selective", "full")
        )
        assert full < sel <= none


def test_kv_cache_of_llama31_8b_is_128_kib_per_token() -> None:
    # 2 (K and V) x 32 layers x 8 kv heads x 128 x 2 bytes = 131072 B: 1 GiB per 8192-token
    # sequence, the figure published for Llama-3-8B's KV cache in bf16.
    arch = arch_for("Llama-3.1-8B")
    assert kv_cache_bytes(arch, 1) == 131072
    assert kv_cache_bytes(arch, 8192) == GIB
    assert kv_cache_bytes(arch, 8192, tp=8) == GIB / 8
    # more TP ranks than KV heads replicate the heads
    assert kv_cache_bytes(arch, 8192, tp=16) == GIB / 8


def test_llama31_8b_static_memory_with_distributed_optimizer() -> None:
    arch = arch_for("Llama-3.1-8B")
    e = estimate(arch, PAPER, tp=1, pp=1, dp=8, distributed_optimizer=True)
    assert e.static == pytest.approx(8_030_261_248 * (6 + 12 / 8))
    plain = estimate(arch, PAPER, tp=1, pp=1, dp=8, distributed_optimizer=False)
    assert plain.static / GIB == pytest.approx(8_030_261_248 * 18 / GIB)  # 134.6 GiB
    assert plain.static / GIB == pytest.approx(134.6, abs=0.1)


def test_pipeline_stage_zero_holds_all_layers_worth_of_in_flight_activations() -> None:
    arch = arch_for("Qwen3-8B")
    a1 = estimate(arch, PAPER, tp=2, pp=1, dp=1, recompute="full")
    a2 = estimate(arch, PAPER, tp=2, pp=2, dp=1, recompute="full")
    # 1F1B: L/p layers x p micro-batches in flight = L layers of one micro-batch
    assert a1.activations == pytest.approx(a2.activations)
    few = dataclasses.replace(PAPER, micro_batches_per_step=1)
    a3 = estimate(arch, few, tp=2, pp=2, dp=1, recompute="full")
    assert a3.activations < a2.activations


def test_plan_orders_feasible_layouts_first_and_flags_invalid_ones() -> None:
    arch = arch_for("Qwen3-8B")
    p = plan(arch, PAPER, gpus=16, gpu_mem_gib=80)
    feasible = [lp.feasible for lp in p.layouts]
    assert feasible == sorted(feasible, reverse=True), "feasible layouts come first"
    ok = [lp for lp in p.layouts if lp.feasible]
    assert [lp.tp * lp.pp for lp in ok] == sorted(lp.tp * lp.pp for lp in ok)
    assert p.recommended is ok[0]
    assert (p.recommended.tp, p.recommended.pp) == (2, 1)
    # the single-GPU replica does not fit 80 GiB; TP=16 is invalid twice over; PP=8 too
    assert "OOM" in p.find(1, 1).verdict()
    v16 = p.find(16, 1).verdict()
    assert "kv heads (8)" in v16 and "spans nodes" in v16
    assert "does not divide 36 layers" in p.find(1, 8).verdict()
    for lp in ok:
        assert lp.chosen is not None and lp.chosen.peak <= 80 * GIB


def test_plan_prefers_no_recompute_when_it_fits() -> None:
    arch = arch_for("Qwen3-4B")
    short = Workload(seq_len=1024, micro_batch_rows=8, micro_batches_per_step=32, group_size=8)
    p = plan(arch, short, gpus=8, gpu_mem_gib=80)
    assert p.recommended is not None and p.recommended.chosen is not None
    assert p.recommended.chosen.recompute == "none"
    assert p.recommended.chosen.distributed_optimizer


def test_no_layout_fits_a_70b_model_on_one_small_node() -> None:
    p = plan(arch_for("Llama-3.1-70B"), PAPER, gpus=8, gpu_mem_gib=40)
    assert p.recommended is None
    assert all(not lp.feasible for lp in p.layouts)


def test_dp_larger_than_the_mini_batch_is_invalid() -> None:
    p = plan(arch_for("DeepSeek-R1-Distill-Qwen-1.5B"), PAPER, gpus=64, gpu_mem_gib=80)
    assert "some DP ranks would get no group" in p.find(1, 1).verdict()


def test_every_shipped_model_config_builds_an_archspec() -> None:
    assert set(known_models()) == set(HF_CONFIGS)
    for name in known_models():
        arch = arch_for(name)
        assert arch.num_layers > 0 and arch.padded_vocab_size() % 128 == 0
    assert arch_for("/checkpoints/Qwen3-8B") == arch_for("qwen3-8b")
    with pytest.raises(ValueError, match="not a known model"):
        arch_for("/nowhere/Mystery-13B")
