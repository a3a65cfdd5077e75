"""Reading and writing HF safetensors directories: sharding, atomicity, truncation errors."""

from __future__ import annotations

import json

import pytest
import torch

from nemo_rence.arch import ArchSpec
from nemo_rence.checkpoint.hf import (
    SAFE_INDEX,
    SafetensorsDir,
    load_hf_state_dict,
    read_hf_config,
    save_hf_dir,
)
from nemo_rence.checkpoint.mapping import CheckpointError, hf_to_megatron, megatron_to_hf
from tests.distributed.workers.ckpt_common import tiny_hf_model, tokens


def _exported(model: torch.nn.Module):
    """HF tensors as the policy would stream them: megatron tensor by tensor, views included."""
    arch = ArchSpec.from_hf_config(model.config)
    for name, t in hf_to_megatron(model.state_dict(), arch).items():
        yield from megatron_to_hf(name, t, arch)


def test_sharded_export_has_an_index_and_transformers_loads_it(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_hf_model("qwen2")
    arch = ArchSpec.from_hf_config(model.config)
    summary = save_hf_dir(
        _exported(model), tmp_path / "out", arch.to_hf_config(), max_shard_bytes=60_000
    )
    files = sorted(p.name for p in (tmp_path / "out").glob("*.safetensors"))
    assert len(files) > 1 and files == summary["files"]
    assert files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    index = json.loads((tmp_path / "out" / SAFE_INDEX).read_text())
    assert set(index["weight_map"].values()) == set(files)
    assert summary["tensors"] == len(index["weight_map"]) == 27
    loaded = load_hf_state_dict(tmp_path / "out")
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = tokens()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, model(ids).logits)


def test_small_export_is_a_single_model_safetensors(tmp_path):
    model = tiny_hf_model("llama_tied")
    arch = ArchSpec.from_hf_config(model.config)
    summary = save_hf_dir(_exported(model), tmp_path / "o", arch.to_hf_config())
    assert summary["files"] == ["model.safetensors"]
    assert not (tmp_path / "o" / SAFE_INDEX).exists()
    assert read_hf_config(tmp_path / "o")["tie_word_embeddings"] is True
    assert "lm_head.weight" not in load_hf_state_dict(tmp_path / "o")


def test_a_failed_export_leaves_neither_output_nor_temp_files(tmp_path):
    def tensors():
        yield "a", torch.zeros(3)
        raise RuntimeError("rank died")

    with pytest.raises(RuntimeError, match="rank died"):
        save_hf_dir(tensors(), tmp_path / "out", {"model_type": "llama"})
    assert list(tmp_path.iterdir()) == []


def test_an_export_replaces_an_existing_directory_whole(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.safetensors").write_bytes(b"x")
    save_hf_dir([("a", torch.ones(2))], tmp_path / "out", {"model_type": "llama"})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_truncated_safetensors_file_fails_naming_the_cut_tensor(tmp_path):
    tensors = [
        ("model.embed_tokens.weight", torch.ones(100, 64)),
        ("model.norm.weight", torch.ones(64)),
    ]
    save_hf_dir(tensors, tmp_path / "out", {"model_type": "llama"})
    f = tmp_path / "out" / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 100])
    with pytest.raises(
        CheckpointError, match=r"tensor 'model\.(norm|embed_tokens)\.weight'.*truncated"
    ):
        load_hf_state_dict(tmp_path / "out")


def test_an_index_naming_a_missing_shard_fails_clearly(tmp_path):
    model = tiny_hf_model("llama")
    save_hf_dir(
        model.state_dict().items(), tmp_path / "o", {"model_type": "llama"}, max_shard_bytes=60_000
    )
    next((tmp_path / "o").glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-.*does not exist"):
        load_hf_state_dict(tmp_path / "o")


def test_a_pipeline_stage_converts_only_its_layers_from_a_lazy_directory(tmp_path):
    model = tiny_hf_model("qwen3_tied")
    model.save_pretrained(tmp_path / "hf")
    arch = ArchSpec.from_hf_config(model.config)
    lazy = SafetensorsDir(tmp_path / "hf")
    assert lazy.shape_of("model.layers.1.self_attn.q_norm.weight") == (32,)
    last_stage = hf_to_megatron(lazy, arch, layers=[1], embedding=True, head=True)
    everything = hf_to_megatron(model.state_dict(), arch)
    assert set(last_stage) == {k for k in everything if not k.startswith("decoder.layers.0.")}
    assert all(torch.equal(t, everything[k]) for k, t in last_stage.items())
