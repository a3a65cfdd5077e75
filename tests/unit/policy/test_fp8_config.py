"""FP8 reachable from the config: where it cannot run it is a config error naming policy.fp8, and
where it runs every micro-batch has the shape Transformer Engine's FP8 GEMMs need."""

from __future__ import annotations

import pytest
import torch

from nemo_rence.config import ConfigError, PolicyConfig, RolloutConfig
from nemo_rence.policy.megatron.model import ArchSpec, check_fp8, sequence_pad_multiple
from nemo_rence.policy.megatron.packing import choose_layout


def _arch(hidden=64, ffn=128, heads=4):
    return ArchSpec(
        model_type="llama",
        num_layers=2,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_query_groups=heads,
        head_dim=hidden // heads,
        ffn_hidden_size=ffn,
        vocab_size=100,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
    )


@pytest.mark.parametrize("value", ["none", "e4m3", "hybrid"])
def test_policy_fp8_accepts_the_three_recipes(value):
    assert PolicyConfig(fp8=value).fp8 == value


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fp8": "fp16"}, r"policy.fp8 must be one of \['none', 'e4m3', 'hybrid'\]"),
        ({"fp8": "e4m3", "precision": "fp32"}, r"policy.fp8='e4m3' needs bf16"),
        ({"fp8": "hybrid", "layout": "shared_prefix"}, r"policy.fp8='hybrid' .* causal masks"),
    ],
)
def test_policy_fp8_config_errors_name_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        PolicyConfig(**fields)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_fp8_on_cpu_is_a_config_error_that_says_why():
    with pytest.raises(
        ConfigError, match=r"policy.fp8='e4m3' needs the Transformer Engine .* no CUDA"
    ):
        check_fp8("e4m3", "local")
    check_fp8(None, "local")  # no fp8: nothing to check


def test_fp8_needs_widths_that_are_multiples_of_16_per_tp_shard():
    check_fp8("hybrid", "te", _arch(), tp=2)  # 64, 128 / 2, 64 / 2: fine
    with pytest.raises(ConfigError, match=r"intermediate_size / TP"):
        check_fp8("hybrid", "te", _arch(ffn=96), tp=4)  # 96 / 4 = 24
    with pytest.raises(ConfigError, match=r"hidden_size"):
        check_fp8("e4m3", "te", _arch(hidden=40, heads=4, ffn=128))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_megatron_policy_with_fp8_on_cpu_fails_before_building_the_model():
    from nemo_rence.policy.megatron.parallel import init_parallel, teardown
    from nemo_rence.policy.megatron.policy import MegatronPolicy, MegatronPolicyConfig

    init_parallel(1, 1)
    try:
        with pytest.raises(ConfigError, match=r"policy\.fp8='hybrid'"):
            MegatronPolicy(_arch(), MegatronPolicyConfig(fp8="hybrid", spec="auto"))
    finally:
        teardown()


@pytest.mark.parametrize(
    ("tp", "sp", "fp8", "multiple"),
    [(1, False, None, 1), (4, True, None, 4), (1, False, "e4m3", 16), (2, True, "hybrid", 32)],
)
def test_sequence_pad_multiple(tp, sp, fp8, multiple):
    assert sequence_pad_multiple(tp, sp, fp8) == multiple


@pytest.mark.parametrize(("tp", "sp"), [(1, False), (2, True), (4, True), (2, False)])
@pytest.mark.parametrize("layout", ["rollout", "shared_prefix"])
def test_fp8_micro_batches_satisfy_te_gemm_shapes(tp, sp, layout):
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        groups, k = int(torch.randint(1, 4, (1,), generator=gen)), 3
        n = groups * k
        prompt = torch.randint(1, 30, (groups,), generator=gen).repeat_interleave(k)
        response = torch.randint(1, 40, (n,), generator=gen)
        width = int((prompt + response).max())
        ids = torch.randint(1, 50, (n, width), generator=gen)
        for g in range(groups):  # a group's rollouts share their prompt
            ids[g * k : (g + 1) * k, : int(prompt[g * k])] = ids[g * k, : int(prompt[g * k])]
        out = choose_layout(
            layout,
            ids,
            prompt,
            response,
            flops_per_token=1.0,
            attention_width=1,
            pad_multiple=sequence_pad_multiple(tp, sp, "hybrid"),
        )
        b, s = out.shape
        assert s >= int((prompt + response).max() if layout == "rollout" else 1)
        s_rank = s // tp if sp else s  # what each TP rank's GEMMs see under sequence parallelism
        assert s % (tp if sp else 1) == 0
        assert s_rank % 16 == 0 and (s_rank * b) % 8 == 0


def test_rollout_tensor_parallel_is_positive_and_needs_a_served_engine():
    assert RolloutConfig(engine="trtllm", tensor_parallel=4).tensor_parallel == 4
    with pytest.raises(ConfigError, match=r"rollout.tensor_parallel must be > 0"):
        RolloutConfig(engine="vllm", tensor_parallel=0)
    with pytest.raises(ConfigError, match=r"rollout.tensor_parallel=2 needs rollout.engine"):
        RolloutConfig(engine="hf", tensor_parallel=2)
