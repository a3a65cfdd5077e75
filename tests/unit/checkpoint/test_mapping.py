"""HF <-> megatron name/layout mapping, TP sharding and ArchSpec parsing (pure tensor code)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nemo_rence.arch import ArchSpec
from nemo_rence.checkpoint import mapping as M
from nemo_rence.checkpoint.mapping import CheckpointError
from nemo_rence.policy.megatron.model import resolve_spec
from tests.distributed.workers.ckpt_common import FAMILIES, tiny_hf_config, tiny_hf_model

ALL_FAMILIES = sorted(FAMILIES)


@pytest.fixture(scope="module")
def hf_models() -> dict[str, torch.nn.Module]:
    return {f: tiny_hf_model(f) for f in ALL_FAMILIES}


def _stored_hf(model: torch.nn.Module, arch: ArchSpec) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    return {k: v for k, v in sd.items() if not (arch.tie_word_embeddings and k == "lm_head.weight")}


def _tiny_arch(**kw) -> ArchSpec:
    base = dict(
        model_type="llama", num_layers=1, hidden_size=2, num_attention_heads=4,
        num_query_groups=2, head_dim=1, ffn_hidden_size=4, vocab_size=8,
        max_position_embeddings=16, rms_norm_eps=1e-5, rope_theta=10000.0,
    )  # fmt: skip
    base.update(kw)
    return ArchSpec(**base)


def test_qkv_is_fused_in_megatron_per_group_interleave_worked_example():
    arch = _tiny_arch(qkv_bias=True, model_type="qwen2")
    q = torch.tensor([0.0, 1, 2, 3])  # 4 query heads, head_dim 1
    k = torch.tensor([10.0, 11])  # 2 kv heads
    v = torch.tensor([20.0, 21])
    fused = M._fuse_qkv(q, k, v, arch)
    assert fused.tolist() == [0, 1, 10, 20, 2, 3, 11, 21]
    back = M._split_qkv(fused, arch)
    assert [t.tolist() for t in back] == [q.tolist(), k.tolist(), v.tolist()]


def test_fc1_tp_shard_holds_gate_slice_over_up_slice_not_a_plain_split():
    name = "decoder.layers.0.mlp.linear_fc1.weight"
    full = torch.tensor([0.0, 1, 2, 3, 10, 11, 12, 13]).unsqueeze(1)  # [gate(4); up(4)]
    shards = [M.tp_shard(name, full, r, 2) for r in range(2)]
    assert shards[0].squeeze(1).tolist() == [0, 1, 10, 11]
    assert shards[1].squeeze(1).tolist() == [2, 3, 12, 13]
    assert not torch.equal(shards[0], torch.chunk(full, 2)[0])
    assert torch.equal(M.tp_gather(name, shards), full)


@pytest.mark.parametrize(
    ("name", "dim"),
    [
        ("embedding.word_embeddings.weight", 0),
        ("output_layer.weight", 0),
        ("decoder.layers.3.self_attention.linear_qkv.weight", 0),
        ("decoder.layers.3.self_attention.linear_qkv.bias", 0),
        ("decoder.layers.3.mlp.linear_fc1.weight", 0),
        ("decoder.layers.3.self_attention.linear_proj.weight", 1),
        ("decoder.layers.3.mlp.linear_fc2.weight", 1),
        ("decoder.layers.3.input_layernorm.weight", None),
        ("decoder.layers.3.self_attention.linear_qkv.layer_norm_weight", None),
        ("decoder.layers.3.mlp.linear_fc1.layer_norm_weight", None),
        ("decoder.layers.3.self_attention.q_layernorm.weight", None),
        ("decoder.final_layernorm.weight", None),
    ],
)
def test_tp_partition_dim_follows_megatron_parallel_layers(name, dim):
    assert M.tp_partition_dim(name) == dim


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("tp", [1, 2])
def test_tp_shard_then_gather_returns_every_full_tensor(hf_models, family, tp):
    arch = ArchSpec.from_hf_config(hf_models[family].config)
    for name, t in M.hf_to_megatron(hf_models[family].state_dict(), arch).items():
        shards = [M.tp_shard(name, t, r, tp) for r in range(tp)]
        dim = M.tp_partition_dim(name)
        if dim is not None and tp > 1:
            assert shards[0].shape[dim] == t.shape[dim] // tp
        assert torch.equal(M.tp_gather(name, shards), t), name


def test_tp_partition_dim_leaves_names_outside_the_table_replicated():
    # Transformer Engine's per-module fp8 state is not a weight: never TP-gathered.
    assert M.tp_partition_dim("decoder.layers.0.self_attention.linear_qkv._extra_state") is None
    assert M.tp_partition_dim("decoder.layers.0.mlp.linear_fc1._extra_state") is None


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_every_rule_shape_matches_its_transform_and_round_trips(hf_models, family):
    # Each table row, alone: random HF tensors of the row's shapes -> the megatron tensor has the
    # row's megatron shape -> back to the same HF tensors.
    arch = ArchSpec.from_hf_config(hf_models[family].config)
    g = torch.Generator().manual_seed(0)
    rows = [r for r in M.TENSORS if r.applies(arch)]
    assert len(rows) >= 9
    for rule in rows:
        hf = [torch.randn(shape, generator=g) for shape in rule.hf_shape_values(arch)]
        full = rule.transform.to_megatron(hf, arch)
        assert tuple(full.shape) == rule.megatron_shape(arch), rule.megatron
        back = rule.transform.to_hf(full, arch)
        assert len(back) == len(hf) and all(
            torch.equal(a, b) for a, b in zip(back, hf, strict=True)
        )


def test_megatron_to_hf_builds_no_arch_per_tensor(hf_models, monkeypatch):
    # Refit converts every tensor of every update: the table is looked up, not rebuilt.
    arch = ArchSpec.from_hf_config(hf_models["qwen2"].config)
    full = M.hf_to_megatron(hf_models["qwen2"].state_dict(), arch)
    built = []
    monkeypatch.setattr(ArchSpec, "__post_init__", lambda self: built.append(self))
    for name, t in full.items():
        M.megatron_to_hf(name, t, arch)
    assert built == []


def test_tp_shard_rejects_a_dim_that_does_not_split_evenly():
    with pytest.raises(CheckpointError, match=r"linear_proj.weight.*does not split evenly"):
        M.tp_shard("decoder.layers.0.self_attention.linear_proj.weight", torch.zeros(4, 6), 0, 4)


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("spec", ["local", "te"])
def test_hf_to_megatron_to_hf_round_trip_is_bit_exact(hf_models, family, spec):
    model = hf_models[family]
    arch = ArchSpec.from_hf_config(model.config)
    full = M.hf_to_megatron(model.state_dict(), arch, spec=spec)
    assert {k: tuple(v.shape) for k, v in full.items()} == M.expected_megatron_shapes(arch, spec)
    back: dict[str, torch.Tensor] = {}
    for name, t in full.items():  # tensor by tensor, as export_weights / refit call it
        for hf_name, ht in M.megatron_to_hf(name, t, arch):
            assert hf_name not in back
            back[hf_name] = ht
    ref = _stored_hf(model, arch)
    assert back.keys() == ref.keys()
    for k in ref:
        assert torch.equal(back[k], ref[k]), k


def test_norm_names_follow_the_chosen_layer_spec(hf_models):
    arch = ArchSpec.from_hf_config(hf_models["qwen3"].config)
    local = M.hf_to_megatron(hf_models["qwen3"].state_dict(), arch, spec="local")
    te = M.hf_to_megatron(hf_models["qwen3"].state_dict(), arch, spec="te")
    assert "decoder.layers.1.input_layernorm.weight" in local
    assert "decoder.layers.1.pre_mlp_layernorm.weight" in local
    assert "decoder.layers.1.self_attention.linear_qkv.layer_norm_weight" in te
    assert "decoder.layers.1.mlp.linear_fc1.layer_norm_weight" in te
    assert "decoder.layers.1.self_attention.q_layernorm.weight" in te
    assert "output_layer.weight" in te and "output_layer.weight" not in M.hf_to_megatron(
        hf_models["qwen3_tied"].state_dict(),
        ArchSpec.from_hf_config(hf_models["qwen3_tied"].config),
    )


def test_vocab_rows_are_zero_padded_for_megatron_and_dropped_on_export(hf_models):
    model = hf_models["llama"]
    arch = ArchSpec.from_hf_config(model.config)
    assert (arch.vocab_size, arch.padded_vocab_size()) == (100, 128)
    full = M.hf_to_megatron(model.state_dict(), arch)
    for name in ("embedding.word_embeddings.weight", "output_layer.weight"):
        assert full[name].shape[0] == 128
        assert torch.count_nonzero(full[name][100:]) == 0
        ((_, exported),) = M.megatron_to_hf(name, full[name], arch)
        assert exported.shape[0] == 100


def test_padded_vocab_is_the_same_for_every_tp_size_that_divides_the_multiple():
    arch = _tiny_arch(vocab_size=49152 + 1)
    assert {arch.padded_vocab_size(tp) for tp in (1, 2, 4, 8)} == {49280}
    with pytest.raises(ValueError, match="tensor-parallel size 3 must divide"):
        arch.padded_vocab_size(3)


def test_a_wrong_hf_shape_fails_naming_the_tensor_and_both_shapes(hf_models):
    sd = dict(hf_models["qwen2"].state_dict())
    sd["model.layers.1.mlp.up_proj.weight"] = torch.zeros(64, 64)
    with pytest.raises(CheckpointError) as e:
        M.hf_to_megatron(sd, ArchSpec.from_hf_config(hf_models["qwen2"].config))
    msg = str(e.value)
    assert "model.layers.1.mlp.up_proj.weight" in msg and "(128, 64)" in msg and "(64, 64)" in msg


def test_a_missing_or_unexpected_hf_tensor_fails_naming_it(hf_models):
    arch = ArchSpec.from_hf_config(hf_models["llama"].config)
    sd = dict(hf_models["llama"].state_dict())
    del sd["model.layers.0.self_attn.k_proj.weight"]
    with pytest.raises(CheckpointError, match=r"model\.layers\.0\.self_attn\.k_proj\.weight"):
        M.hf_to_megatron(sd, arch)
    sd = dict(
        hf_models["llama"].state_dict(),
        **{"model.layers.2.mlp.up_proj.weight": sd["lm_head.weight"]},
    )
    with pytest.raises(CheckpointError, match=r"unexpected.*model\.layers\.2\.mlp\.up_proj"):
        M.hf_to_megatron(sd, arch)


def test_megatron_to_hf_rejects_unknown_names_and_wrong_shapes(hf_models):
    arch = ArchSpec.from_hf_config(hf_models["qwen3"].config)
    with pytest.raises(CheckpointError, match=r"decoder\.layers\.0\.mlp\.router\.weight"):
        M.megatron_to_hf("decoder.layers.0.mlp.router.weight", torch.zeros(2), arch)
    with pytest.raises(CheckpointError, match=r"layer index 7 out of range"):
        M.megatron_to_hf("decoder.layers.7.mlp.linear_fc2.weight", torch.zeros(64, 128), arch)
    with pytest.raises(CheckpointError, match=r"linear_qkv.weight.*\(256, 64\).*\(255, 64\)"):
        M.megatron_to_hf(
            "decoder.layers.0.self_attention.linear_qkv.weight", torch.zeros(255, 64), arch
        )
    assert (
        M.megatron_to_hf("decoder.layers.0.mlp.linear_fc1._extra_state", torch.zeros(1), arch) == []
    )


def test_unsupported_model_type_error_lists_the_supported_ones():
    with pytest.raises(ValueError, match=r"'gpt2'.*llama, qwen2, qwen3"):
        ArchSpec.from_hf_config({"model_type": "gpt2", "hidden_size": 8})


def test_arch_reads_families_gqa_head_dim_bias_qk_norm_and_ties():
    llama = ArchSpec.from_hf_config(tiny_hf_config("llama3_rope"))
    assert (llama.num_query_groups, llama.head_dim, llama.tie_word_embeddings) == (2, 16, True)
    assert llama.rope_theta == 500000.0 and llama.rope_scaling is not None
    assert llama.rope_scaling.original_max_position_embeddings == 32
    qwen2 = ArchSpec.from_hf_config(tiny_hf_config("qwen2"))
    assert qwen2.qkv_bias and not qwen2.qk_layernorm
    qwen3 = ArchSpec.from_hf_config(tiny_hf_config("qwen3"))
    assert qwen3.qk_layernorm and qwen3.head_dim == 32 and not qwen3.qkv_bias
    assert qwen3.rms_norm_eps == 1e-5


def test_arch_reads_a_transformers_4_style_config_json():
    cfg = {
        "model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": True,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    }  # fmt: skip
    arch = ArchSpec.from_hf_config(cfg)
    assert arch.rope_theta == 500000.0 and arch.rope_scaling is not None
    assert arch.rope_scaling.factor == 32.0


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_arch_survives_json_and_hf_config_round_trips(family):
    arch = ArchSpec.from_hf_config(tiny_hf_config(family))
    assert ArchSpec.from_dict(arch.to_dict()) == arch
    assert ArchSpec.from_hf_config(arch.to_hf_config()) == arch


def test_unsupported_variants_fail_with_the_reason():
    with pytest.raises(ValueError, match="attention_bias"):
        ArchSpec.from_hf_config(tiny_hf_config("llama", attention_bias=True))
    with pytest.raises(ValueError, match="rope_type='yarn'"):
        ArchSpec.from_hf_config(
            tiny_hf_config("qwen2", rope_scaling={"rope_type": "yarn", "factor": 4.0})
        )


def test_layer_names_convert_between_stage_local_and_global_indices():
    assert M.to_global_name("decoder.layers.1.mlp.linear_fc1.weight", 4) == (
        "decoder.layers.5.mlp.linear_fc1.weight"
    )
    assert M.to_local_name("decoder.layers.5.mlp.linear_fc1.weight", 4) == (
        "decoder.layers.1.mlp.linear_fc1.weight"
    )
    assert (
        M.to_global_name("embedding.word_embeddings.weight", 4)
        == "embedding.word_embeddings.weight"
    )
    assert M.layer_index("decoder.layers.12.x.weight") == 12
    assert M.layer_index("decoder.final_layernorm.weight") is None


def test_layer_spec_choice_is_validated():
    assert resolve_spec("local") == "local"
    with pytest.raises(ValueError, match="'auto', 'te', 'local'"):
        resolve_spec("fast")
    if not torch.cuda.is_available():
        assert resolve_spec("auto") == "local"


def test_requesting_te_without_transformer_engine_names_the_fix():
    import importlib.util

    if importlib.util.find_spec("transformer_engine") is not None:
        pytest.skip("Transformer Engine is installed here")
    with pytest.raises(ImportError, match=r"Transformer Engine.*spec='local'"):
        resolve_spec("te")


def test_arch_validates_gqa_divisibility():
    with pytest.raises(ValueError, match="multiple of num_key_value_heads"):
        dataclasses.replace(_tiny_arch(), num_query_groups=3)
